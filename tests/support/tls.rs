//! TLS for tests: certificates made afresh by each test process (rcgen; no
//! private key is ever checked in), redis-server nodes that speak only TLS
//! (`port 0`, `tls-port`, `tls-cluster yes`), and redis-cli with TLS.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::{Cluster, Node, TempDir, free_port, node_timeout_ms, wait_for};

/// A CA, a certificate it signed for 127.0.0.1 and localhost (for servers
/// and clients alike: cluster nodes are each other's clients), and a second
/// CA that signed nothing here, as PEM files in a scratch directory.
pub struct TlsFiles {
    dir: TempDir,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = TempDir::new("tls");
        let files = TlsFiles { dir };
        let (ca, ca_key) = new_ca("slotgate test CA");
        std::fs::write(files.ca(), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "slotgate test");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        std::fs::write(files.cert(), leaf.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(files.key(), key.serialize_pem()).unwrap();
        let (other, other_key) = new_ca("another CA");
        std::fs::write(files.other_ca(), other.self_signed(&other_key).unwrap().pem()).unwrap();
        files
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    pub fn cert(&self) -> PathBuf {
        self.file("test.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.file("test.key")
    }

    /// A CA that signed none of these certificates.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    /// redis-cli's TLS arguments, with the client certificate.
    pub fn cli_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(self.ca()),
            "--cert".into(),
            path(self.cert()),
            "--key".into(),
            path(self.key()),
        ]
    }

    /// slotgate's arguments for TLS toward the nodes: their CA, and the
    /// client certificate they ask for.
    pub fn node_tls_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--node-tls".into(),
            "--node-tls-ca-cert-file".into(),
            path(self.ca()),
            "--node-tls-cert-file".into(),
            path(self.cert()),
            "--node-tls-key-file".into(),
            path(self.key()),
        ]
    }
}

fn new_ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params, KeyPair::generate().unwrap())
}

/// `redis-cli -p <port> <TLS args> <args>`, with `input` on its standard
/// input; returns its exit success and what it printed.
pub fn redis_cli(port: u16, tls: &[String], args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args(["20", "redis-cli", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli must be installed (apt-get install -y redis-tools)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The port of the master serving `slot` in a TLS cluster, as its first
/// node's `CLUSTER NODES` says.
pub fn tls_owner(cluster: &Cluster, tls: &TlsFiles, slot: u16) -> u16 {
    let (_, nodes) = redis_cli(cluster.nodes[0].port, &tls.cli_args(), &["CLUSTER", "NODES"], "");
    nodes
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .filter(|fields| fields.len() > 8 && fields[2].contains("master"))
        .find(|fields| {
            fields[8..].iter().filter(|r| !r.starts_with('[')).any(|range| {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                (first.parse::<u16>().unwrap()..=last.parse::<u16>().unwrap()).contains(&slot)
            })
        })
        .and_then(|fields| fields[1].split(['@', ':']).nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no master serves slot {slot}:\n{nodes}"))
}

impl Cluster {
    /// `masters` masters (no replicas) that speak only TLS, with `tls`'s
    /// certificates; clients must show one too (Redis's default
    /// `tls-auth-clients yes`). Made with `redis-cli --cluster create --tls`.
    pub fn start_tls(masters: usize, tls: &TlsFiles) -> Cluster {
        let dir = TempDir::new("tls-cluster");
        let path = |p: PathBuf| p.display().to_string();
        let extra: Vec<String> = [
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--tls-cert-file",
            &path(tls.cert()),
            "--tls-key-file",
            &path(tls.key()),
            "--tls-ca-cert-file",
            &path(tls.ca()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let nodes: Vec<Node> = (0..masters).map(|_| Node::spawn_tls(free_port(), dir.path(), &extra, tls)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args: Vec<&str> = vec!["create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let tls_args = tls.cli_args();
        let (ok, text) = redis_cli(nodes[0].port, &tls_args, &[&["--cluster"], args.as_slice()].concat(), "");
        assert!(ok && !text.contains("[ERR]"), "redis-cli --cluster create --tls failed:\n{text}");
        wait_for("the TLS cluster to be stable", Duration::from_secs(30), || {
            nodes.iter().all(|n| redis_cli(n.port, &tls_args, &["CLUSTER", "INFO"], "").1.contains("cluster_state:ok"))
        });
        Cluster { nodes, dir, extra }
    }
}

impl Node {
    /// A node on TLS port `port` alone (`port 0`: no plain port).
    fn spawn_tls(port: u16, dir: &std::path::Path, extra: &[String], tls: &TlsFiles) -> Node {
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            &node_timeout_ms().to_string(),
            "--dir",
            &dir.display().to_string(),
            "--logfile",
            &format!("redis-{port}.log"),
            "--dbfilename",
            &format!("dump-{port}.rdb"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut node = Node { port, child: None, watchdog: None, args, tls_cli: Some(tls.cli_args()) };
        node.restart();
        node
    }
}
