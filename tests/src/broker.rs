//! Apache Kafka in KRaft mode, run as child processes for the tests and the demo: one node
//! ([`Broker::start`]) or a cluster of three ([`Broker::cluster`]) whose nodes are each broker and
//! controller, on free ports of 127.0.0.1.
//!
//! The jars and launchers come from `scripts/setup.sh` (`~/.cache/aispm/kafka`, or
//! `$AISPM_KAFKA_HOME`). Every node's storage is formatted once per machine into a template
//! (`kafka-storage format`, a JVM start of its own) and copied for each new broker, so a test pays
//! one broker start, not two. Kafka's own admin tools run through [`tool`].
//!
//! [`Broker::start_secured`] runs a node with the security settings of `compose/` (SASL
//! listeners, the `StandardAuthorizer`, no access without an ACL), read from
//! `compose/docker-compose.yml` itself: see [`crate::compose`].

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Apache Kafka installation: `$AISPM_KAFKA_HOME`, else the setup script's cache.
pub fn kafka_home() -> Result<PathBuf> {
    let p = match std::env::var("AISPM_KAFKA_HOME") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let home = std::env::var("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(".cache/aispm/kafka")
        }
    };
    if !p.join("bin/kafka-server-start").exists() {
        bail!(
            "Apache Kafka is not installed at {}: run scripts/setup.sh",
            p.display()
        );
    }
    Ok(p)
}

/// Runs one of Kafka's own command-line tools (`kafka-consumer-groups`, `kafka-configs`,
/// `kafka-console-consumer`, ...) with `args`; fails unless it exits 0. Its stdout is the answer.
pub fn tool(name: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(kafka_home()?.join("bin").join(name))
        .args(args)
        .env("KAFKA_OPTS", tools_jvm_options())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!(
            "{name} {} exited with {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// JVM options for Kafka's command-line tools: a class-data-sharing archive of the classes they
/// load (dumped from one run of `kafka-acls`, once per machine and Kafka version, by the first
/// [`Broker::start_secured`]), which halves a tool's start. Empty until the archive exists; a JVM
/// that cannot use it runs without it. The JVM's own logging is kept off stdout, which callers
/// parse.
pub fn tools_jvm_options() -> String {
    match tools_archive() {
        Some(p) if p.exists() => format!(
            "-XX:SharedArchiveFile={} -Xshare:auto -Xlog:disable -Xlog:all=warning:stderr",
            p.display()
        ),
        _ => String::new(),
    }
}

fn tools_archive() -> Option<PathBuf> {
    let home = kafka_home().ok()?;
    let version = std::fs::read_to_string(home.join("VERSION")).unwrap_or_default();
    Some(home.join("cds").join(version.trim()).join("tools.jsa"))
}

/// A free TCP port on 127.0.0.1, never one this process was given before: the kernel may hand
/// the same free port to two `bind(0)`s in a row, and two services told to listen on one port
/// would answer for each other (a test then sees one service's 404 for the other's route).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One KRaft node: broker and controller in one JVM.
#[derive(Debug)]
struct Node {
    id: u32,
    /// The client listener (`PLAINTEXT`, or `CLIENT` on a secured node).
    port: u16,
    controller_port: u16,
    /// A secured node's other listeners by name (`BROKER`, `EXTERNAL`).
    listener_ports: BTreeMap<String, u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

/// A running single node or cluster; every node is killed when dropped.
#[derive(Debug)]
pub struct Broker {
    nodes: Vec<Node>,
    /// The nodes' directories when they go with the broker (none for [`Broker::start_in`]).
    _dir: Option<tempfile::TempDir>,
    security: Option<Security>,
}

/// The name of the secured node's listener for clients (`CLIENT` in compose/).
const CLIENT_LISTENER: &str = "CLIENT";

/// What makes a node secured: the compose broker's settings.
#[derive(Debug, Clone)]
struct Security {
    /// Broker properties as `compose/docker-compose.yml` gives them to the `apache/kafka`
    /// image; ports, hosts and paths are rewritten per node when its configuration is written.
    properties: Vec<(String, String)>,
    /// Each listener's name and port in compose/.
    listeners: Vec<(String, u16)>,
    /// The compose service's `KAFKA_OPTS`, for the JVM.
    jvm_options: String,
    /// The inter-broker listener, where the super user signs in with PLAIN.
    admin_listener: String,
    admin_user: String,
    admin_password: String,
    /// Kafka's Java client properties for the super user (`--command-config` of the tools).
    admin_config: PathBuf,
    /// The security protocol of the `CLIENT` listener (`SASL_SSL` in compose/).
    client_protocol: String,
    /// The CA certificate clients trust, made by `compose/kafka/certs.sh`.
    ca_file: PathBuf,
}

/// Where compose/ mounts the broker's TLS material (`kafka-certs` volume).
const COMPOSE_CERTS_DIR: &str = "/etc/kafka/certs";

impl Broker {
    /// A single-node broker (replication factor 1), ready to serve.
    pub fn start() -> Result<Broker> {
        Self::start_nodes(1)
    }

    /// A three-node cluster: every topic aispm creates there should take replication factor 3,
    /// and `min.insync.replicas` is 2, so any one node may die without losing an acknowledged
    /// record or stopping producers.
    pub fn cluster() -> Result<Broker> {
        Self::start_nodes(3)
    }

    /// A single-node broker listening on `port`, its storage in `dir` (kept: a later start
    /// on the same directory finds its records and committed offsets), for the demo, the soak
    /// and running aispm by hand (`aispm-broker`).
    pub fn start_in(dir: &Path, port: u16) -> Result<Broker> {
        std::fs::create_dir_all(dir)?;
        Self::start_nodes_in(dir.to_owned(), None, Some(port), 1, None)
    }

    /// A single-node broker with the security of `compose/`: its `kafka` service's settings
    /// (SASL listeners, `StandardAuthorizer`, `allow.everyone.if.no.acl.found=false`, the super
    /// user) read from `compose/docker-compose.yml`, with `vars` for its `${…}` variables (the
    /// passwords; unset ones take the file's defaults). Only the super user can do anything
    /// until ACLs say otherwise: see [`kafka_setup`].
    ///
    /// [`Broker::bootstrap`] is the `CLIENT` listener (SASL_SSL, SCRAM-SHA-512: [`Broker::client_options`]);
    /// [`Broker::admin_bootstrap`], [`Broker::admin_options`] and
    /// [`Broker::admin_command_config`] sign in as the super user.
    pub fn start_secured(vars: &BTreeMap<String, String>) -> Result<Broker> {
        let env = crate::compose::service_environment("kafka", vars)?;
        let properties = crate::compose::kafka_properties(&env);
        let prop = |key: &str| {
            properties
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .with_context(|| format!("compose/docker-compose.yml sets no {key}"))
        };
        let listeners = prop("listeners")?
            .split(',')
            .map(|l| {
                let (name, addr) = l
                    .split_once("://")
                    .with_context(|| format!("listener {l}"))?;
                let port = addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .with_context(|| format!("listener {l} has no port"))?;
                Ok((name.trim().to_owned(), port))
            })
            .collect::<Result<Vec<(String, u16)>>>()?;
        if !listeners.iter().any(|(n, _)| n == CLIENT_LISTENER) {
            bail!("compose/docker-compose.yml has no {CLIENT_LISTENER} listener");
        }
        let admin_listener = prop("inter.broker.listener.name")?;
        let jaas = prop(&format!(
            "listener.name.{}.plain.sasl.jaas.config",
            admin_listener.to_lowercase()
        ))?;
        let admin_user = jaas_option(&jaas, "username")?;
        let admin_password = jaas_option(&jaas, "password")?;
        let jvm_options = env
            .iter()
            .find(|(k, _)| k == "KAFKA_OPTS")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let dir = tempfile::tempdir()?;
        // The broker's TLS material, made by compose's own script (keytool from the JDK here,
        // from the apache/kafka image there), with an address the tests connect to.
        let certs = dir.path().join("certs");
        let tls_password = vars
            .get("AISPM_KAFKA_TLS_PASSWORD")
            .context("AISPM_KAFKA_TLS_PASSWORD is required (compose/docker-compose.yml)")?;
        let made = std::process::Command::new("sh")
            .arg(crate::compose::compose_dir().join("kafka").join("certs.sh"))
            .env("AISPM_KAFKA_CERTS_DIR", &certs)
            .env("AISPM_KAFKA_TLS_PASSWORD", tls_password)
            .env("AISPM_KAFKA_TLS_HOSTS", "kafka,localhost,127.0.0.1")
            .output()?;
        if !made.status.success() {
            bail!(
                "compose/kafka/certs.sh failed: {}",
                String::from_utf8_lossy(&made.stderr)
            );
        }
        let properties: Vec<(String, String)> = properties
            .into_iter()
            .map(|(k, v)| {
                let v = v.replace(COMPOSE_CERTS_DIR, &certs.display().to_string());
                (k, v)
            })
            .collect();
        let client_protocol = properties
            .iter()
            .rev()
            .find(|(k, _)| k == "listener.security.protocol.map")
            .and_then(|(_, map)| {
                map.split(',')
                    .find_map(|l| l.strip_prefix(&format!("{CLIENT_LISTENER}:")))
                    .map(str::to_owned)
            })
            .context("compose/docker-compose.yml maps no protocol for the CLIENT listener")?;
        let admin_config = dir.path().join("admin.properties");
        std::fs::write(
            &admin_config,
            format!(
                "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n\
                 sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
                 username=\"{admin_user}\" password=\"{admin_password}\";\n"
            ),
        )?;
        let security = Security {
            properties,
            listeners,
            jvm_options,
            admin_listener,
            admin_user,
            admin_password,
            admin_config,
            client_protocol,
            ca_file: certs.join("ca.pem"),
        };
        let root = dir.path().to_owned();
        let b = Self::start_nodes_in(root, Some(dir), None, 1, Some(security))?;
        b.ensure_tools_archive()?;
        Ok(b)
    }

    fn start_nodes(n: u32) -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        Self::start_nodes_in(dir.path().to_owned(), Some(dir), None, n, None)
    }

    fn start_nodes_in(
        root: PathBuf,
        owned: Option<tempfile::TempDir>,
        port: Option<u16>,
        n: u32,
        security: Option<Security>,
    ) -> Result<Broker> {
        let mut nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                port: port.unwrap_or_else(free_port),
                controller_port: free_port(),
                listener_ports: security
                    .iter()
                    .flat_map(|s| &s.listeners)
                    .map(|(name, _)| (name.clone(), free_port()))
                    .collect(),
                dir: root.join(format!("node-{id}")),
                child: None,
            })
            .collect();
        for node in &mut nodes {
            if let Some(p) = node.listener_ports.get(CLIENT_LISTENER) {
                node.port = *p;
            }
        }
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut nodes {
            std::fs::create_dir_all(&node.dir)?;
            let mut props = server_properties(node, n, &voters);
            if let Some(security) = &security {
                props = secured_properties(node, security, &props)?;
            }
            std::fs::write(node.dir.join("server.properties"), props)?;
            if !node.dir.join("data/meta.properties").exists() {
                copy_dir(&formatted_template(node.id)?, &node.dir.join("data"))?;
            }
        }
        let mut b = Broker {
            nodes,
            _dir: owned,
            security,
        };
        for i in 0..b.nodes.len() {
            b.spawn(i)?;
        }
        b.wait_ready(Duration::from_secs(90))?;
        Ok(b)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let home = kafka_home()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.nodes[i].log())?;
        // A test broker holds little: a 512 MiB heap leaves room for three nodes and the
        // services on 2 cores and 24 GiB (the demo and compose/ give one node 1 GiB).
        let heap =
            std::env::var("AISPM_KAFKA_HEAP_OPTS").unwrap_or_else(|_| "-Xms256m -Xmx512m".into());
        let jvm_options = self
            .security
            .as_ref()
            .map(|s| s.jvm_options.clone())
            .unwrap_or_default();
        let node = &mut self.nodes[i];
        let child = Command::new(home.join("bin/kafka-server-start"))
            .arg(node.dir.join("server.properties"))
            .env("KAFKA_HEAP_OPTS", heap)
            .env("KAFKA_OPTS", jvm_options)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Apache Kafka")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node is registered and answers metadata.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect();
        for &i in &running {
            let consumer: BaseConsumer = self.admin_client(&[i]).create()?;
            loop {
                if let Some(child) = self.nodes[i].child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    self.nodes[i].child = None;
                    bail!(
                        "Kafka node {} exited with {status}: {}",
                        self.nodes[i].id,
                        self.log_tail()
                    );
                }
                // The node answers, and sees every running node registered (a broker that
                // answers before the controllers know it would refuse to lead partitions).
                if let Ok(md) = consumer.fetch_metadata(None, Duration::from_millis(500))
                    && md.brokers().len() >= running.len()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "Kafka node {} not ready within {timeout:?}: {}",
                        self.nodes[i].id,
                        self.log_tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Every node's `127.0.0.1:<port>`, comma-separated, for `bootstrap.servers` and `--brokers`.
    pub fn bootstrap(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_bootstrap(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address of node `i` (0-based) alone.
    pub fn node_bootstrap(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    /// The process id of every running node's JVM.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// How many nodes the cluster has (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The replication factor topics should take here: 3 on a cluster, 1 on a single node.
    pub fn replication_factor(&self) -> i32 {
        self.nodes.len().min(3) as i32
    }

    /// The node id (1-based) of node `i`.
    pub fn node_id(&self, i: usize) -> i32 {
        self.nodes[i].id as i32
    }

    /// The leader of every partition of `topics` (`-1` while a partition has none), as the
    /// running nodes' metadata tells it.
    pub fn leaders(
        &self,
        topics: &[&str],
    ) -> Result<std::collections::BTreeMap<(String, i32), i32>> {
        let md = self.metadata()?;
        let mut out = std::collections::BTreeMap::new();
        for t in md.topics().iter().filter(|t| topics.contains(&t.name())) {
            for p in t.partitions() {
                out.insert((t.name().to_owned(), p.id()), p.leader());
            }
        }
        Ok(out)
    }

    /// How many partitions of the cluster have fewer in-sync replicas than replicas.
    pub fn under_replicated(&self) -> Result<usize> {
        let md = self.metadata()?;
        Ok(md
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .filter(|p| p.isr().len() < p.replicas().len())
            .count())
    }

    /// Waits until no partition is under-replicated (what a rolling restart waits for before
    /// it takes the next node down).
    pub fn wait_fully_replicated(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.under_replicated() {
                Ok(0) => return Ok(()),
                Ok(n) if Instant::now() > deadline => {
                    bail!("{n} partition(s) still under-replicated after {timeout:?}")
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn metadata(&self) -> Result<rdkafka::metadata::Metadata> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect();
        let consumer: BaseConsumer = self.admin_client(&running).create()?;
        Ok(consumer.fetch_metadata(None, Duration::from_secs(10))?)
    }

    /// A client of nodes `nodes` that may do anything: the plain listener, or a secured node's
    /// super user on its inter-broker listener.
    fn admin_client(&self, nodes: &[usize]) -> ClientConfig {
        let mut c = ClientConfig::new();
        let bootstrap = nodes
            .iter()
            .map(|&i| self.node_admin_bootstrap(i))
            .collect::<Vec<_>>()
            .join(",");
        c.set("bootstrap.servers", bootstrap).set("log_level", "0");
        for (k, v) in self.admin_options() {
            c.set(k, v);
        }
        c
    }

    fn node_admin_bootstrap(&self, i: usize) -> String {
        match &self.security {
            Some(s) => format!(
                "127.0.0.1:{}",
                self.nodes[i].listener_ports[&s.admin_listener]
            ),
            None => self.node_bootstrap(i),
        }
    }

    /// Where a client signs in as the super user: a secured broker's inter-broker listener
    /// (SASL/PLAIN, with [`Broker::admin_options`]); otherwise [`Broker::bootstrap`].
    pub fn admin_bootstrap(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_admin_bootstrap(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// librdkafka properties for `user` signing in with SCRAM-SHA-512 at [`Broker::bootstrap`]
    /// of a secured broker, as the services get them with `--kafka-option`: the compose
    /// `CLIENT` listener's protocol and, with TLS, the CA made for this broker.
    pub fn client_options(&self, user: &str, password: &str) -> Vec<(String, String)> {
        let Some(s) = &self.security else {
            return vec![];
        };
        let mut options = vec![
            ("security.protocol".to_owned(), s.client_protocol.clone()),
            ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
            ("sasl.username".to_owned(), user.to_owned()),
            ("sasl.password".to_owned(), password.to_owned()),
        ];
        if s.client_protocol.ends_with("SSL") {
            options.push((
                "ssl.ca.location".to_owned(),
                s.ca_file.display().to_string(),
            ));
        }
        options
    }

    /// The CA certificate a secured broker's clients trust (`compose/kafka/certs.sh`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.security.as_ref().map(|s| s.ca_file.as_path())
    }

    /// librdkafka properties of the super user at [`Broker::admin_bootstrap`] (none on an
    /// unsecured broker).
    pub fn admin_options(&self) -> Vec<(String, String)> {
        match &self.security {
            Some(s) => [
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", s.admin_user.as_str()),
                ("sasl.password", s.admin_password.as_str()),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            None => vec![],
        }
    }

    /// The `--command-config` file for Kafka's tools at [`Broker::admin_bootstrap`] (a
    /// secured broker's super user).
    pub fn admin_command_config(&self) -> Option<&Path> {
        self.security.as_ref().map(|s| s.admin_config.as_path())
    }

    /// The address of a secured node's listener `name` (`EXTERNAL`, …), as compose/ names it.
    pub fn listener(&self, name: &str) -> Option<String> {
        let port = self.nodes.first()?.listener_ports.get(name)?;
        Some(format!("127.0.0.1:{port}"))
    }

    /// Dumps the class-data-sharing archive of [`tools_jvm_options`] unless it exists: one run
    /// of `kafka-acls --list` as the super user.
    fn ensure_tools_archive(&self) -> Result<()> {
        let (Some(archive), Some(config)) = (tools_archive(), self.admin_command_config()) else {
            return Ok(());
        };
        if archive.exists() {
            return Ok(());
        }
        let dir = archive.parent().context("archive has no directory")?;
        std::fs::create_dir_all(dir)?;
        let work = tempfile::tempdir_in(dir)?;
        let dump = work.path().join("tools.jsa");
        let out = Command::new(kafka_home()?.join("bin/kafka-acls"))
            .args([
                "--bootstrap-server",
                &self.admin_bootstrap(),
                "--command-config",
            ])
            .arg(config)
            .arg("--list")
            .env(
                "KAFKA_OPTS",
                format!(
                    "-XX:ArchiveClassesAtExit={} -Xlog:disable -Xlog:all=warning:stderr",
                    dump.display()
                ),
            )
            .stdin(Stdio::null())
            .output()
            .context("running kafka-acls")?;
        if !out.status.success() {
            bail!(
                "kafka-acls --list exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A JVM that could not dump leaves no file: the tools then start without an archive.
        if dump.exists() {
            match std::fs::rename(&dump, &archive) {
                Ok(()) => {}
                Err(_) if archive.exists() => {}
                Err(e) => return Err(e).context("installing the class-data-sharing archive"),
            }
        }
        Ok(())
    }

    /// Kills node `i` with SIGKILL: no controlled shutdown, no flush beyond what the OS has.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` with SIGTERM and waits for its controlled shutdown (leadership moves
    /// first), as a rolling restart does.
    pub fn shut_down_node(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let Some(mut child) = self.nodes[i].child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "Kafka node {} did not shut down within {timeout:?}",
                    self.nodes[i].id
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a stopped node again on its ports and storage and waits until it serves (a
    /// no-op while it runs).
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i)?;
        self.wait_ready(Duration::from_secs(90))
    }

    /// Kills every node (SIGKILL).
    pub fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Kills every node and starts them again on the same ports and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    /// Starts every stopped node again and waits until the cluster serves.
    pub fn start_again(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        self.wait_ready(Duration::from_secs(90))
    }

    /// Whether any node is running.
    pub fn is_running(&self) -> bool {
        self.nodes.iter().any(|n| n.child.is_some())
    }

    /// Every node's whole log (every run), one after the other.
    pub fn log(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "== node {}\n{}",
                    n.id,
                    std::fs::read_to_string(n.log()).unwrap_or_default()
                )
            })
            .collect()
    }

    /// The last lines of every node's log.
    pub fn log_tail(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(n.log()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "== node {}\n{}\n",
                    n.id,
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's configuration: KRaft with static voters, one listener for clients and one for
/// the controllers, internal topics replicated as widely as the cluster allows.
fn server_properties(node: &Node, nodes: u32, voters: &str) -> String {
    let rf = nodes.min(3);
    let min_isr = if nodes >= 3 { 2 } else { 1 };
    format!(
        "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
# Topics are created by the services (each with its partitions, cleanup and retention), never
# by a stray produce or fetch.
auto.create.topics.enable=false
default.replication.factor={rf}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=12
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
# Groups form at once instead of waiting 3 s for more members: tests start one consumer at a time.
group.initial.rebalance.delay.ms=0
# A node killed with SIGKILL can register again only once its old registration's session has
# expired (DUPLICATE_BROKER_REGISTRATION until then), and the controllers move its partitions'
# leadership only then: 5 s instead of Kafka's 9 s, so the fault tests restart and fail over
# sooner. The behaviour is Kafka's; only the timing is shorter.
broker.session.timeout.ms=5000
broker.heartbeat.interval.ms=1000
# Two cores: fewer threads than Kafka's defaults for many-core machines.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
",
        id = node.id,
        port = node.port,
        cport = node.controller_port,
        data = node.dir.join("data").display(),
    )
}

/// A secured node's configuration: the compose broker's properties, with its listeners on this
/// node's ports of 127.0.0.1 and its data in the node's directory, after the test timings of
/// `base` that compose does not set (where both set a key, compose's value stands).
fn secured_properties(node: &Node, security: &Security, base: &str) -> Result<String> {
    let controller = security
        .properties
        .iter()
        .rev()
        .find(|(k, _)| k == "controller.listener.names")
        .map(|(_, v)| v.clone())
        .context("compose/docker-compose.yml sets no controller.listener.names")?;
    // Compose port → this node's port, per listener.
    let ports: Vec<(u16, u16)> = security
        .listeners
        .iter()
        .map(|(name, port)| {
            let local = if *name == controller {
                node.controller_port
            } else {
                node.listener_ports[name]
            };
            (*port, local)
        })
        .collect();
    let rewrite = |v: &str| {
        let mut v = v.to_owned();
        for (from, to) in &ports {
            for host in ["kafka", "localhost"] {
                v = v.replace(&format!("{host}:{from}"), &format!("127.0.0.1:{to}"));
            }
            v = v.replace(&format!("://:{from}"), &format!("://127.0.0.1:{to}"));
        }
        v
    };
    let security_keys: Vec<&str> = security
        .properties
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let mut out = String::new();
    // The listener lines of `base` go: compose's listeners replace them.
    for line in base.lines() {
        let key = line.split_once('=').map_or("", |(k, _)| k);
        let listener_key = key.contains("listener") || key == "controller.quorum.voters";
        if !listener_key && !security_keys.contains(&key) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# compose/docker-compose.yml, service kafka\n");
    for (k, v) in &security.properties {
        let v = match k.as_str() {
            "log.dirs" => node.dir.join("data").display().to_string(),
            "node.id" => node.id.to_string(),
            "listeners" | "advertised.listeners" | "controller.quorum.voters" => {
                let v = rewrite(v);
                if v.contains("kafka:") || v.contains("localhost:") || v.contains("://:") {
                    bail!("{k}={v}: a listener of compose/docker-compose.yml was not mapped");
                }
                v
            }
            _ => v.clone(),
        };
        out.push_str(&format!("{k}={v}\n"));
    }
    Ok(out)
}

/// The value of `option="…"` in a JAAS configuration line.
fn jaas_option(jaas: &str, option: &str) -> Result<String> {
    let start = jaas
        .find(&format!(" {option}=\""))
        .with_context(|| format!("no {option} in {jaas}"))?
        + option.len()
        + 3;
    let len = jaas[start..]
        .find('"')
        .with_context(|| format!("unterminated {option} in {jaas}"))?;
    Ok(jaas[start..start + len].to_owned())
}

/// A storage directory formatted for node `id` (a fixed cluster id; the node's configuration
/// supplies everything else), made once per machine and Kafka version and copied for each
/// broker. Formatting writes only `meta.properties` and the bootstrap metadata, neither of
/// which names a port or a path.
fn formatted_template(id: u32) -> Result<PathBuf> {
    let home = kafka_home()?;
    let version = std::fs::read_to_string(home.join("VERSION")).unwrap_or_default();
    let root = home.join("formatted").join(version.trim());
    let dir = root.join(format!("node-{id}"));
    if dir.join("meta.properties").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root)?;
    let work = tempfile::tempdir_in(&root)?;
    let props = work.path().join("format.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller\nnode.id={id}\ncontroller.quorum.voters={id}@127.0.0.1:9\n\
             controller.listener.names=CONTROLLER\n\
             listeners=PLAINTEXT://127.0.0.1:8,CONTROLLER://127.0.0.1:9\nlog.dirs={}\n",
            work.path().join("data").display()
        ),
    )?;
    // Any cluster id in Kafka's form (a UUID in 22 characters of URL-safe base64).
    let cluster_id = "MkU3OEVBNTcwNTJENDM2Qk";
    let out = Command::new(home.join("bin/kafka-storage"))
        .args(["format", "--ignore-formatted", "-t", cluster_id, "-c"])
        .arg(&props)
        .output()
        .context("running kafka-storage format")?;
    if !out.status.success() {
        bail!(
            "kafka-storage format failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Another test may have made the same template meanwhile: the first rename wins.
    match std::fs::rename(work.path().join("data"), &dir) {
        Ok(()) => {}
        Err(_) if dir.join("meta.properties").exists() => {}
        Err(e) => return Err(e).context("installing the formatted template"),
    }
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
/// Runs `compose/kafka/setup.sh` (credentials and ACLs) against `broker` as the compose
/// `kafka-setup` service does, with the local Kafka tools; `vars` holds the passwords
/// (`AISPM_KAFKA_*_PASSWORD`). Fails with the script's output unless it exits 0.
pub fn kafka_setup(
    broker: &Broker,
    vars: &BTreeMap<String, String>,
) -> Result<std::process::Output> {
    let home = kafka_home()?;
    let out = std::process::Command::new("sh")
        .arg(crate::compose::compose_dir().join("kafka/setup.sh"))
        .env("KAFKA_ADMIN_BOOTSTRAP", broker.admin_bootstrap())
        .env("KAFKA_BIN", home.join("bin"))
        .env("KAFKA_TOOL_SUFFIX", "")
        .env("KAFKA_OPTS", tools_jvm_options())
        .envs(vars)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running compose/kafka/setup.sh")?;
    if !out.status.success() {
        bail!(
            "compose/kafka/setup.sh exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}
