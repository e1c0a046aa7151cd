//! A throwaway PostgreSQL cluster for a test: `initdb` into a temporary
//! folder, started on a free loopback port with trust authentication, and
//! stopped (immediately) when dropped. A real server, never a mock.
//!
//! The server's programs are found in `TEST_PG_BIN` if set, else in
//! the newest `/usr/lib/postgresql/<version>/bin` (Debian keeps them off
//! `PATH`). PostgreSQL refuses to run as root; as root, the cluster is run
//! as the `postgres` user, which Debian's package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; stopped and deleted when dropped.
pub struct TestPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl TestPostgres {
    /// Creates and starts a cluster for tests: without fsync (nothing here
    /// survives the machine anyway). Panics, saying how to install
    /// PostgreSQL, if its programs cannot be found.
    pub fn start() -> TestPostgres {
        Self::start_with(false, "")
    }

    /// Like [`start`](Self::start), with every commit fsynced, as in
    /// production: for benchmarks.
    pub fn start_durable() -> TestPostgres {
        Self::start_with(true, "")
    }

    /// Like [`start_durable`](Self::start_durable), with more lines for
    /// `postgresql.conf` (for a benchmark's diagnostics, say).
    pub fn start_durable_with(settings: &str) -> TestPostgres {
        Self::start_with(true, settings)
    }

    /// Like [`start`](Self::start), serving TLS as well, with a server
    /// certificate for `127.0.0.1` and `localhost` from a CA of its own;
    /// returns the CA's certificate (PEM) too.
    pub fn start_tls() -> (TestPostgres, PathBuf) {
        let cluster = Self::create(false, "");
        let tls = cluster.dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(&tls));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=flowhost test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            tls.join("san.ext"),
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        if cluster.as_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&tls));
        }
        run(Command::new("chmod").arg("600").arg(tls.join("server.key")));
        cluster.configure(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            tls.join("server.crt").display(),
            tls.join("server.key").display()
        ));
        cluster.start_again();
        (cluster, tls.join("ca.pem"))
    }

    fn start_with(fsync: bool, extra: &str) -> TestPostgres {
        let cluster = Self::create(fsync, extra);
        cluster.start_again();
        cluster
    }

    /// A cluster made and configured, not started.
    fn create(fsync: bool, extra: &str) -> TestPostgres {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("flowhost-pg-")
            .tempdir()
            .expect("a temporary folder");
        let as_root = rustix::process::geteuid().is_root();
        if as_root {
            // The cluster's owner must be able to reach its folder.
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(server_command(&bin, "initdb", as_root)
            .args([
                "--auth=trust",
                "--username=flowhost",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data));
        let port = free_port();
        // In the cluster's configuration, so that a restart keeps them;
        // sockets in the cluster's own folder, not the system's.
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nfsync = {}\nmax_connections = 200\n{extra}\n",
            dir.path().display(),
            if fsync { "on" } else { "off" },
        );
        let cluster = TestPostgres { bin, dir, port };
        cluster.configure(&settings);
        cluster
    }

    /// Adds `settings` to the cluster's `postgresql.conf`.
    fn configure(&self, settings: &str) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .and_then(|mut conf| std::io::Write::write_all(&mut conf, settings.as_bytes()))
            .expect("the cluster's configuration is writable");
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://flowhost@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh database in the cluster, and its URL.
    pub fn database(&self, name: &str) -> String {
        run(server_command(&self.bin, "createdb", self.as_root())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "flowhost",
            ])
            .arg(name));
        format!("postgres://flowhost@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` with `psql` in database `name`; returns what it printed.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "flowhost",
            ])
            .args(["-d", name, "-X", "-q", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        run(server_command(&self.bin, "pg_ctl", self.as_root())
            .args(["stop", "--mode=immediate", "--silent", "-D"])
            .arg(self.data()));
    }

    /// Starts the server (again), on its port and data.
    pub fn start_again(&self) {
        run(server_command(&self.bin, "pg_ctl", self.as_root())
            .args(["start", "--wait", "--silent", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log")));
    }

    fn as_root(&self) -> bool {
        rustix::process::geteuid().is_root()
    }

    /// The CPU time (user and system, in seconds) the server has used so
    /// far: its main process and its backends, live and ended (an ended
    /// backend's time is counted in its parent's once reaped). For
    /// benchmarks, which count the database's share of the work.
    pub fn cpu_seconds(&self) -> f64 {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("the server is running");
        let main: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut ticks = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, after_name)) = stat.rsplit_once(')') else {
                continue;
            };
            // Counted after the name: 2 is the parent, 12 to 15 utime,
            // stime, cutime, cstime.
            let fields: Vec<u64> = after_name
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            if pid == main {
                ticks += fields[11] + fields[12] + fields[13] + fields[14];
            } else if fields[1] == u64::from(main) {
                ticks += fields[11] + fields[12];
            }
        }
        ticks as f64 / 100.0
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = server_command(&self.bin, "pg_ctl", self.as_root())
            .args(["stop", "--mode=immediate", "--silent", "-D"])
            .arg(self.data())
            .status();
    }
}

/// The folder of `initdb` and `pg_ctl`.
fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TEST_PG_BIN") {
        return PathBuf::from(bin);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .max_by_key(|bin| version_of(bin));
    newest.unwrap_or_else(|| {
        panic!(
            "these tests need PostgreSQL's server (initdb, pg_ctl), not found in \
             /usr/lib/postgresql/<version>/bin: install it (Debian, Ubuntu: \
             `sudo apt-get install postgresql`), or set TEST_PG_BIN to the \
             folder that holds initdb and pg_ctl"
        )
    })
}

/// The major version in `/usr/lib/postgresql/<version>/bin`.
fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// `program` of the server, run as `postgres` when we are root.
fn server_command(bin: &Path, program: &str, as_root: bool) -> Command {
    let path = bin.join(program);
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
