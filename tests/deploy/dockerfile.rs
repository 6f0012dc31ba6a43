//! deploy/Dockerfile and .dockerignore: the image builds the binary Cargo.toml declares
//! from files that reach the build context, and runs it unprivileged on the ports compose uses.

use std::path::Path;

use super::compose::{Compose, env_var};
use super::{DOCKERFILE, cargo_binary, cargo_targets, host_of, is_loopback, port_of, read, root};

/// One Dockerfile instruction: its keyword (upper case) and its arguments.
type Instruction = (String, String);

/// Instruction arguments as words: a JSON array (exec form) or split on whitespace.
fn exec_words(args: &str) -> Vec<String> {
    if args.trim_start().starts_with('[') {
        serde_json::from_str(args.trim()).unwrap_or_else(|e| panic!("{DOCKERFILE}: bad exec form {args}: {e}"))
    } else {
        args.split_whitespace().map(String::from).collect()
    }
}

/// The Dockerfile's stages, each a list of instructions (continuations joined,
/// comments dropped), starting with its FROM.
pub(super) fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in read(DOCKERFILE).lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let Some((keyword, args)) = full.trim().split_once(char::is_whitespace) else { continue };
        let keyword = keyword.to_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("Dockerfile: an instruction before FROM").push((keyword, args.trim().to_string()));
    }
    stages
}

pub(super) fn find<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage.iter().filter(|(k, _)| k == keyword).map(|(_, args)| args.as_str()).collect()
}

#[test]
fn dockerfile_builds_the_cargo_binary_and_runs_it_unprivileged() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "{DOCKERFILE} must be multi-stage (build, then a small runtime)");
    let binary = cargo_binary();
    let build = &stages[0];
    assert!(find(build, "FROM")[0].starts_with("rust:"), "{DOCKERFILE}: build with the official Rust image");
    let cargo_build = format!("cargo build --release --locked --bin {binary}");
    let runs = find(build, "RUN");
    let builds: Vec<&&str> = runs.iter().filter(|run| run.contains("cargo build")).collect();
    assert!(!builds.is_empty(), "{DOCKERFILE} must run `{cargo_build}`");
    for run in builds {
        assert!(run.contains(&cargo_build), "{DOCKERFILE} must run `{cargo_build}`, not: {run}");
    }
    // Dependencies cached by a build against stub sources: the real sources, copied with
    // their own (older) timestamps, must be touched or cargo ships the stub binary.
    if let Some(stub) = runs.iter().position(|run| run.contains("> src/main.rs")) {
        let last = runs.iter().rposition(|run| run.contains("cargo build")).unwrap();
        let touched = runs[stub + 1..=last].iter().any(|run| run.contains("touch") && run.contains("src/main.rs"));
        assert!(touched, "{DOCKERFILE}: after the stub build, touch src/main.rs before the real `cargo build`");
    }

    let runtime = stages.last().unwrap();
    assert!(!find(runtime, "FROM")[0].starts_with("rust:"), "{DOCKERFILE}: the runtime must not be the Rust image");
    let user = find(runtime, "USER").last().copied().unwrap_or_else(|| panic!("{DOCKERFILE}: runtime has no USER"));
    // Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
    let uid: u32 =
        user.split(':').next().unwrap().parse().unwrap_or_else(|_| panic!("USER {user} is not a numeric uid"));
    assert_ne!(uid, 0, "{DOCKERFILE}: the runtime runs as root");

    let copied = find(runtime, "COPY").into_iter().find(|c| c.starts_with("--from="));
    let copied = copied.unwrap_or_else(|| panic!("{DOCKERFILE}: the runtime copies nothing from the build"));
    assert!(exec_words(copied)[1].ends_with(&format!("/{binary}")), "runtime copies {copied}, not {binary}");
    let entrypoint = exec_words(find(runtime, "ENTRYPOINT").last().expect("no ENTRYPOINT"));
    assert_eq!(Path::new(&entrypoint[0]).file_name().unwrap().to_str(), Some(binary.as_str()), "ENTRYPOINT");
    let healthcheck = find(runtime, "HEALTHCHECK").last().copied().expect("no HEALTHCHECK");
    let command = exec_words(healthcheck.split_once("CMD").expect("HEALTHCHECK without CMD").1);
    assert_eq!(command, [binary.as_str(), "health"], "{DOCKERFILE}: HEALTHCHECK");

    let exposed = find(runtime, "EXPOSE").join(" ");
    let exposed: Vec<&str> = exposed.split_whitespace().map(|p| p.trim_end_matches("/tcp")).collect();
    let env = find(runtime, "ENV").join(" ");
    for var in ["SLOTGATE_LISTEN", "SLOTGATE_METRICS"] {
        let compose_addr = env_var(Compose::load().service("slotgate"), var, "slotgate");
        let port = port_of(&compose_addr).to_string();
        assert!(exposed.contains(&port.as_str()), "{DOCKERFILE} does not EXPOSE {port}, slotgate's {var} in compose");
        let image_addr = env.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{var}=")));
        let image_addr = image_addr.unwrap_or_else(|| panic!("{DOCKERFILE}: no default {var}"));
        assert!(!is_loopback(host_of(image_addr)), "{DOCKERFILE}: {var}={image_addr} is unreachable from outside");
    }
}

#[test]
fn dockerfile_copies_what_exists_and_the_manifest_needs() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target", ".git", "data"] {
        assert!(patterns.contains(&needed), ".dockerignore must leave {needed} out of the build context");
    }
    let ignored = |path: &str| {
        patterns.iter().any(|p| {
            let p = p.trim_start_matches("**/").trim_start_matches('/').trim_end_matches('/');
            let p = p.strip_suffix('*').unwrap_or(p);
            path == p || path.starts_with(&format!("{p}/")) || (p.len() < path.len() && path.starts_with(p))
        })
    };
    let mut sources = Vec::new();
    for stage in dockerfile_stages() {
        for copy in find(&stage, "COPY").into_iter().chain(find(&stage, "ADD")) {
            let words = exec_words(copy);
            if words.iter().any(|w| w.starts_with("--from=")) {
                continue;
            }
            let words: Vec<&String> = words.iter().filter(|w| !w.starts_with("--")).collect();
            for source in &words[..words.len() - 1] {
                let source = source.trim_start_matches("./");
                assert!(root().join(source).exists(), "{DOCKERFILE} copies {source}, which does not exist");
                assert!(!ignored(source), "{DOCKERFILE} copies {source}, which .dockerignore leaves out");
                sources.push(source.trim_end_matches('/').to_string());
            }
        }
    }
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string(), "src/main.rs".to_string()];
    // cargo refuses a manifest whose declared targets are missing, even unbuilt ones.
    needed.extend(cargo_targets("bench").into_iter().map(|(_, path)| path));
    for path in needed {
        let copied = sources.iter().any(|s| path == *s || path.starts_with(&format!("{s}/")));
        assert!(copied, "{DOCKERFILE} never copies {path}, which `cargo build` needs");
    }
}
