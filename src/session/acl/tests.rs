//! Rule parsing, glob matching and logins, checked against what redis-server 7.0 does.

use super::*;

const S3CRET_SHA256: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

fn user(rules: &str) -> User {
    User::parse("app", true, &[Password::Plain("pw")], rules).unwrap()
}

fn command(name: &str) -> &'static Command {
    let (top, sub) = name.split_once('|').map_or((name, None), |(top, sub)| (top, Some(sub)));
    let entry = command::lookup_name(top.as_bytes()).unwrap();
    sub.map_or(entry, |sub| entry.subcommand(sub.as_bytes()).unwrap()).command
}

fn refused(rules: &str) -> String {
    User::parse("app", true, &[Password::Plain("pw")], rules).unwrap_err().to_string()
}

/// Each pattern and the keys it matches among `KEYS`, as redis-server
/// 7.0.15's `KEYS <pattern>` (the same `stringmatchlen`) answered.
#[test]
fn glob_patterns_match_as_in_redis() {
    let keys: &[&[u8]] = &[
        b"",
        b"a",
        b"ab",
        b"abc",
        b"app:x",
        b"app:",
        b"other:x",
        b"a*c",
        b"a?c",
        b"a[c",
        b"a\\c",
        "h\u{e9}llo".as_bytes(),
        b"\xffx",
        b"b",
        b"-",
        b"]",
        b"^",
        b"x]",
    ];
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"app:*", &[b"app:", b"app:x"]),
        (b"a?c", &[b"a*c", b"a?c", b"a[c", b"a\\c", b"abc"]),
        (b"a*", &[b"a", b"a*c", b"a?c", b"a[c", b"a\\c", b"ab", b"abc", b"app:", b"app:x"]),
        (b"a**c", &[b"a*c", b"a?c", b"a[c", b"a\\c", b"abc"]),
        (b"a\\*c", &[b"a*c"]),
        (b"a\\?c", &[b"a?c"]),
        (b"[ab]", &[b"a", b"b"]),
        (b"[^a]", &[b"-", b"]", b"^", b"b"]),
        (b"[a-c]", &[b"a", b"b"]),
        (b"[c-a]", &[b"a", b"b"]),
        (b"a[b-]", &[b"ab"]),
        (b"[]", &[]),
        (b"[^]", &[b"-", b"]", b"^", b"a", b"b"]),
        (b"[a", &[b"a"]),
        (b"a[", &[]),
        (b"a\\", &[]),
        (b"\\a", &[b"a"]),
        // The empty key matches no pattern but `*` (which is allkeys).
        (
            b"**",
            &[
                b"-",
                b"]",
                b"^",
                b"a",
                b"a*c",
                b"a?c",
                b"a[c",
                b"a\\c",
                b"ab",
                b"abc",
                b"app:",
                b"app:x",
                b"b",
                "h\u{e9}llo".as_bytes(),
                b"other:x",
                b"x]",
                b"\xffx",
            ],
        ),
        (b"?", &[b"-", b"]", b"^", b"a", b"b"]),
        (b"h*llo", &["h\u{e9}llo".as_bytes()]),
        (b"[\x80-\xff]x", &[b"\xffx"]),
        (b"[\x00-\x7f]x", &[]),
        (b"[\\]]", &[b"]"]),
        (b"[x-]]", &[b"]", b"^", b"a", b"b"]),
        (b"*x*", &[b"app:x", b"other:x", b"x]", b"\xffx"]),
        (b"a*b*c", &[b"abc"]),
        (b"[a-]", &[b"]", b"^", b"a"]),
    ];
    for (pattern, wanted) in cases {
        let mut got: Vec<&[u8]> = keys.iter().copied().filter(|key| glob_match(pattern, key)).collect();
        got.sort_unstable();
        assert_eq!(&got, wanted, "{}", String::from_utf8_lossy(pattern));
    }
    // Backtracking is cut short: this would take ages without it.
    let key = "a".repeat(64);
    assert!(!glob_match(b"*a*a*a*a*a*a*a*a*a*a*a*a*b", key.as_bytes()));
}

#[test]
fn rules_apply_in_order_like_acl_setuser() {
    let reader = user("+@read -@dangerous ~app:*");
    assert!(reader.may_run(command("get")) && reader.may_run(command("mget")));
    assert!(!reader.may_run(command("set")));
    // In @read and @dangerous: the later rule wins.
    assert!(!reader.may_run(command("keys")) && !reader.may_run(command("sort_ro")));
    // AUTH, HELLO, QUIT and RESET are every user's; PING is not.
    assert!(reader.may_run(command("auth")) && reader.may_run(command("reset")));
    assert!(!reader.may_run(command("ping")));
    assert!(reader.may_access(b"app:x") && !reader.may_access(b"other:x"));
    assert!(!reader.unrestricted && !reader.all_keys());

    let admin = user("+@all -config|set allkeys");
    assert!(admin.may_run(command("config|get")) && !admin.may_run(command("config|set")));
    assert!(admin.all_keys() && !admin.unrestricted);
    let config = user("+config");
    assert!(config.may_run(command("config|set")) && config.may_run(command("config|get")));
    assert!(!user("+config -config").may_run(command("config|get")));
    assert!(user("-@all +get").may_run(command("get")));
    assert!(!user("allcommands nocommands").may_run(command("get")));
    assert!(user("ALLCOMMANDS ~*").unrestricted);
    assert!(user("+@ALL AllKeys").unrestricted);
    assert!(!user("").may_run(command("get")) && !user("").may_access(b"k"), "nothing until a rule says so");
    assert!(!user("allkeys resetkeys").may_access(b"k"));
    assert!(user("allkeys resetkeys ~k*").may_access(b"key"));
    assert!(user("~a ~b").may_access(b"b"));
}

#[test]
fn what_slotgate_does_not_support_is_an_error_naming_the_user_and_rule() {
    for (rules, why) in [
        ("&chan", "channels are not restricted"),
        ("allchannels", "channels are not restricted"),
        ("%R~app:*", "%R~"),
        (">secret", "passwords go in password"),
        ("#abc", "passwords go in password"),
        ("nopass", "passwords go in password"),
        ("on", "enabled = true"),
        ("+@nosuch", "no such command category"),
        ("+nosuch", "no such command"),
        ("+config|nosuch", "no such subcommand"),
        ("+select|0", "first-argument"),
        ("allkeys ~app:*", "resetkeys"),
        ("(~x)", "not a rule"),
        ("\u{e9}", "not a rule"),
    ] {
        let error = refused(&format!("+get {rules}"));
        let rule = rules.split_whitespace().last().unwrap_or_default();
        assert!(error.starts_with(&format!("user \"app\": rule \"{}\": ", rule.escape_debug())), "{error}");
        assert!(error.contains(why), "{rules}: {error}");
    }
}

#[test]
fn users_log_in_with_their_passwords_or_not_at_all() {
    let sha = User::parse("hashed", true, &[Password::Sha256(S3CRET_SHA256)], "").unwrap();
    let upper = User::parse("upper", true, &[Password::Sha256(&S3CRET_SHA256.to_uppercase())], "").unwrap();
    let two = User::parse("two", true, &[Password::Plain("a"), Password::Plain("b")], "").unwrap();
    let off = User::parse("off", false, &[Password::Plain("s3cret")], "allcommands").unwrap();
    let users = Users::new(None, vec![sha, upper, two, off]).unwrap();
    assert!(users.log_in(b"hashed", b"s3cret").is_some());
    assert!(users.log_in(b"upper", b"s3cret").is_some());
    assert!(users.log_in(b"hashed", b"S3cret").is_none());
    assert!(users.log_in(b"two", b"a").is_some() && users.log_in(b"two", b"b").is_some());
    assert!(users.log_in(b"off", b"s3cret").is_none(), "disabled");
    assert!(users.log_in(b"nobody", b"s3cret").is_none());
    // No requirepass, no default in [[users]]: Redis's nopass default.
    assert!(users.without_auth().is_some_and(|user| user.unrestricted));
    assert!(users.log_in(b"default", b"anything").is_some());

    let users = Users::new(Some("s3cret"), Vec::new()).unwrap();
    assert!(users.without_auth().is_none());
    assert!(users.log_in(b"default", b"s3cret").is_some_and(|user| user.unrestricted));
    assert!(users.log_in(b"default", b"wrong").is_none());

    let default = User::parse("default", true, &[Password::Plain("pw")], "+@read ~*").unwrap();
    let users = Users::new(None, vec![default]).unwrap();
    assert!(users.without_auth().is_none(), "a defined default user has a password");
    assert!(users.log_in(b"default", b"pw").is_some_and(|user| !user.may_run(command("set"))));
    assert!(!Users::nobody().default_user().enabled);
}

#[test]
fn users_that_cannot_work_are_errors() {
    let default = || User::parse("default", true, &[Password::Plain("pw")], "").unwrap();
    let error = Users::new(Some("s3cret"), vec![default()]).unwrap_err().to_string();
    assert!(error.contains("requirepass must be empty"), "{error}");
    let error = Users::new(None, vec![default(), default()]).unwrap_err().to_string();
    assert_eq!(error, "user \"default\": defined twice");
    let error = User::parse("x", true, &[], "").unwrap_err().to_string();
    assert!(error.contains("needs password or password_sha256"), "{error}");
    assert!(User::parse("x", false, &[], "").is_ok(), "a disabled user needs none");
    for hex in ["abc", &"g".repeat(64), &"\u{e9}".repeat(32)] {
        let error = User::parse("x", true, &[Password::Sha256(hex)], "").unwrap_err().to_string();
        assert!(error.contains("64 hex digits"), "{error}");
    }
}
