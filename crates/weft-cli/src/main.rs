//! weft: the admin CLI. Talks to the local weftd socket, or to a manager over mutual TLS.
//!
//! This file holds the command line and the dispatch; each noun's verbs live in their own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use weft_cli::client::{self, DEFAULT_SOCKET, Host, TlsFiles};
use weft_proto::v1 as pb;

mod cluster;
mod container;
mod exec;
mod failure;
mod image;
mod network;
mod node;
mod output;
mod parse;
mod rpc;
mod terminal;
mod why;

use failure::{EXIT_ERROR, Failure};

/// The command line: where to connect, and the verb.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "weft: one flat network for containers on many hosts")]
struct Cli {
    /// Daemon to talk to: unix:///path/to/weft.sock (default /run/weft/weft.sock) or https://IP:PORT.
    #[arg(short = 'H', long, env = "WEFT_HOST", global = true)]
    host: Option<String>,
    /// Client certificate for https:// hosts.
    #[arg(long, global = true)]
    tls_cert: Option<PathBuf>,
    /// Client key for https:// hosts.
    #[arg(long, global = true)]
    tls_key: Option<PathBuf>,
    /// Cluster CA for https:// hosts.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The verbs, by noun; the container verbs sit at the top level, as in Docker.
#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// The cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Networks: create, ls, inspect, rm, connect, disconnect, why (`net` for short).
    #[command(subcommand, alias = "net")]
    Network(network::NetworkCommand),
    /// Images: import, build, export, ls, inspect, rm, tag.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Creates and starts a container.
    Run(container::RunArgs),
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Prints a shell completion script.
    Completion {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
}

/// Connects, then runs the verb; `completion` needs no connection.
async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
        return Ok(0);
    }
    let host = Host::parse(cli.host.as_deref().unwrap_or(&format!("unix://{DEFAULT_SOCKET}")))
        .map_err(|e| e.to_string())?;
    let tls = TlsFiles { cert: cli.tls_cert, key: cli.tls_key, ca: cli.tls_ca };
    let channel = client::channel(&host, &tls).await.map_err(|e| e.to_string())?;
    let mut agent = pb::agent_client::AgentClient::new(channel.clone())
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let mut api = pb::cluster_client::ClusterClient::new(channel).max_decoding_message_size(256 << 20);
    match cli.command {
        Command::Completion { .. } => unreachable!("handled above"),
        Command::Node(c) => node::node(&mut api, c).await,
        Command::Cluster(c) => cluster::cluster(&mut api, c).await,
        Command::Network(c) => network::network(&mut agent, &mut api, c).await,
        Command::Image(c) => image::image(&mut agent, c).await,
        Command::Run(args) => container::run(&mut agent, args).await,
        Command::Container(c) => container::container(&mut agent, c).await,
    }
}

fn main() -> ExitCode {
    // A reader that goes away (`weft ps | head -1`) ends weft quietly, as it does any Unix tool,
    // instead of a panic on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Usage errors exit 125 like every other weft error (Docker does the same); --help and
    // --version print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weft: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("weft: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    /// Parses a command line as `weft` would; the nouns' tests use it too.
    pub(crate) fn parse(line: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft").chain(line.iter().copied()))
    }

    /// The verb of a command line that must parse.
    pub(crate) fn command(line: &[&str]) -> Command {
        match parse(line) {
            Ok(cli) => cli.command,
            Err(e) => panic!("weft {}: {e}", line.join(" ")),
        }
    }

    /// How a command line that must not parse is refused.
    pub(crate) fn refusal(line: &[&str]) -> ErrorKind {
        match parse(line) {
            Ok(cli) => panic!("weft {} parsed: {:?}", line.join(" "), cli.command),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_are_global_and_optional() {
        let cli = parse(&["ps"]).unwrap();
        if std::env::var_os("WEFT_HOST").is_none() {
            assert_eq!(cli.host, None);
        }
        assert_eq!((cli.tls_cert, cli.tls_key, cli.tls_ca), (None, None, None));
        let line = [
            "ps",
            "-H",
            "https://198.51.100.1:7946",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
        ];
        let cli = parse(&line).unwrap();
        assert_eq!(cli.host.as_deref(), Some("https://198.51.100.1:7946"));
        assert_eq!(cli.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(cli.tls_key, Some(PathBuf::from("k.pem")));
        assert_eq!(cli.tls_ca, Some(PathBuf::from("ca.pem")));
        let cli = parse(&["--host", "unix:///tmp/w.sock", "node", "ls"]).unwrap();
        assert_eq!(cli.host.as_deref(), Some("unix:///tmp/w.sock"));
        let cli = parse(&["node", "ls", "-H", "unix:///tmp/w.sock"]).unwrap();
        assert_eq!(cli.host.as_deref(), Some("unix:///tmp/w.sock"));
    }

    #[test]
    fn help_and_version_exit_zero_and_usage_errors_do_not() {
        // main() exits 0 when clap's error goes to stdout, EXIT_ERROR when it goes to stderr.
        for line in [&["--help"][..], &["-h"], &["--version"], &["run", "--help"], &["exec", "-h"]] {
            let e = parse(line).unwrap_err();
            assert!(!e.use_stderr(), "weft {}: {:?}", line.join(" "), e.kind());
        }
        for line in [&[][..], &["bogus"], &["ps", "--bogus"], &["run"], &["node"], &["exec", "c"]] {
            let e = parse(line).unwrap_err();
            assert!(e.use_stderr(), "weft {}: {:?}", line.join(" "), e.kind());
        }
        assert_eq!(refusal(&["bogus"]), ErrorKind::InvalidSubcommand);
        assert_eq!(refusal(&["ps", "--bogus"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn completion_takes_a_shell() {
        for shell in ["bash", "zsh", "fish"] {
            assert!(matches!(command(&["completion", shell]), Command::Completion { .. }), "{shell}");
        }
        assert_eq!(refusal(&["completion", "cmd"]), ErrorKind::InvalidValue);
        assert_eq!(refusal(&["completion"]), ErrorKind::MissingRequiredArgument);
    }
}
