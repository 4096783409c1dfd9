//! The `main` of a generated system binary: one binary per system that starts the controller,
//! one named box, or every box in one process.
//!
//! ```text
//! store controller --listen 127.0.0.1:7070         # the controller, in a box of its own
//! store box front --controller 127.0.0.1:7070      # the box `front` of the deployment
//!
//! # `controller |> replicate(3)`: one process per replica, every box knows them all
//! store controller --replica 0 --controllers 127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072
//! store box front --controller 127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072
//! store local                                      # every box in this process
//! store test --seeds 100 --faults delay,reorder    # the simulator (docs/verification.md)
//! ```
//!
//! A box prints `ovid: finished <id>` on standard output when one of its agents finishes, so
//! `ovidc run` can tell when the system's clients are done. Ctrl-C or SIGTERM shuts it down
//! cleanly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::controller::Controller;
use crate::controller_group::ControllerReplica;
use crate::deployment::Deployment;
use crate::error::Error;
use crate::host::{BoxBuilder, BoxHandle};

/// What the generated code supplies: teaches a box every kind of agent of the system.
pub type Kinds = fn(BoxBuilder) -> BoxBuilder;

/// Everything a generated system binary knows about its system.
#[derive(Clone, Copy)]
pub struct System {
    /// `deployment.json`.
    pub deployment: &'static str,
    /// Teaches a box every kind of agent of the system.
    pub kinds: Kinds,
    /// The `test` command (the simulator, in the `ovid-sim` crate, which the generated binary
    /// links through its `check` module): the system and the arguments after `test`.
    pub test: Option<TestCommand>,
    /// A hash of the system's generated files: `fingerprint` prints it, so that whoever built
    /// the binary can tell that it runs this system and not another of the same name.
    pub fingerprint: &'static str,
}

/// Runs `<bin> test ARGS…` for a system.
pub type TestCommand = fn(&System, Vec<String>) -> ExitCode;

#[derive(Parser)]
#[command(about = "Runs boxes of an Ovid system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controller, or one replica of a replicated controller (in a box with no other
    /// agents), until stopped.
    Controller {
        /// Address to listen on (a replica listens at its entry of `--controllers`).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Runs replica number `REPLICA` of the replicated controller.
        #[arg(long, requires = "controllers")]
        replica: Option<usize>,
        /// Every replica's address, comma-separated, in replica order.
        #[arg(long, value_delimiter = ',')]
        controllers: Vec<String>,
        /// Keeps the replica's Paxos state in this directory, so that it restarts from it
        /// (without: it recovers from its peers).
        #[arg(long, requires = "replica")]
        data_dir: Option<PathBuf>,
    },
    /// Runs one box of the deployment until stopped.
    Box {
        /// The box's name in the deployment.
        name: String,
        /// Address of the controller's box; of every replica's, comma-separated, when the
        /// controller is replicated.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        controller: Vec<String>,
        /// Address to listen on (default: the deployment's, or a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Keeps the agents' durable stores (a replica proxy's Paxos state) in this directory,
        /// so that the box restarted with it loses nothing acknowledged.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Runs the controller and every box in this process; stops when the clients finish.
    Local,
    /// Prints the deployment description.
    Deployment,
    /// Prints the fingerprint of the system's generated files.
    #[command(hide = true)]
    Fingerprint,
    /// Checks every transformed agent in a deterministic simulation against the original agent
    /// (linearizability, then refinement at quiescence); see docs/verification.md and
    /// `<bin> test --help`.
    #[command(disable_help_flag = true)]
    Test {
        /// The simulator's own flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Parses the command line and runs what it asks for; the whole `main` of a system binary.
pub fn main(system: System) -> ExitCode {
    let (deployment_json, kinds) = (system.deployment, system.kinds);
    let cli = Cli::parse();
    // The simulator runs every agent hundreds of times over; their warnings would drown its report.
    let quiet = if matches!(cli.command, Command::Test { .. }) {
        "off"
    } else {
        "warn"
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| quiet.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let deployment = match Deployment::from_json(deployment_json) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match cli.command {
        Command::Test { args } => {
            return match system.test {
                Some(test) => test(&system, args),
                None => {
                    eprintln!("error: this binary was built without the simulator");
                    ExitCode::FAILURE
                }
            };
        }
        other => Cli { command: other },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Controller {
                replica: Some(index),
                controllers,
                data_dir,
                ..
            } => run_controller_replica(&deployment, index, controllers, data_dir).await,
            Command::Controller { listen, .. } => run_controller(&deployment, &listen).await,
            Command::Box {
                name,
                controller,
                listen,
                data_dir,
            } => run_box(&deployment, kinds, &name, &controller, listen, data_dir).await,
            Command::Local => run_local(&deployment, kinds).await,
            Command::Deployment => {
                println!("{deployment_json}");
                Ok(())
            }
            Command::Fingerprint => {
                println!("{}", system.fingerprint);
                Ok(())
            }
            Command::Test { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_controller(deployment: &Deployment, listen: &str) -> Result<(), Error> {
    let b = BoxBuilder::new("controller")
        .listen(listen)
        .with_controller(Controller::new(deployment.placement()))
        .start()
        .await
        .map_err(|e| bind_error(e, "the controller", listen))?;
    println!("ovid: controller listening on {}", b.addr());
    stopped().await;
    b.shutdown().await;
    Ok(())
}

async fn run_controller_replica(
    deployment: &Deployment,
    index: usize,
    controllers: Vec<String>,
    data_dir: Option<PathBuf>,
) -> Result<(), Error> {
    let listen = controllers.get(index).cloned().ok_or_else(|| {
        Error::Invalid(format!(
            "controller replica {index}: only {} addresses in --controllers",
            controllers.len()
        ))
    })?;
    let replica = ControllerReplica::new(
        index,
        controllers.len(),
        Controller::new(deployment.placement()),
    )?;
    let name = crate::controller_group::replica_box(index);
    let mut b = BoxBuilder::new(&name);
    if let Some(dir) = data_dir {
        b = b.data_dir(dir);
    }
    let b = b
        .with_controller_replica(index, replica, controllers)
        .start()
        .await
        .map_err(|e| bind_error(e, &name, &listen))?;
    println!("ovid: controller listening on {}", b.addr());
    stopped().await;
    b.shutdown().await;
    Ok(())
}

async fn run_box(
    deployment: &Deployment,
    kinds: Kinds,
    name: &str,
    controller: &[String],
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> Result<(), Error> {
    let spec = deployment
        .find_box(name)
        .ok_or_else(|| Error::UnknownIdentifier(format!("box `{name}` (not in the deployment)")))?;
    let listen = listen
        .or_else(|| spec.address.clone())
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let mut b = kinds(BoxBuilder::new(name));
    if let Some(dir) = data_dir {
        b = b.data_dir(dir);
    }
    let b = b
        .listen(&listen)
        .controllers_at(controller.to_vec())
        .start()
        .await
        .map_err(|e| bind_error(e, name, &listen))?;
    b.ready().await?;
    println!("ovid: box {name} listening on {}", b.addr());
    let watched = spec.agents.clone();
    // The box keeps serving after its agents finish, until told to stop: other boxes may
    // still need it.
    tokio::select! {
        _ = report_finished(&b, &watched) => {}
        _ = stopped() => {}
    }
    b.shutdown().await;
    Ok(())
}

async fn run_local(deployment: &Deployment, kinds: Kinds) -> Result<(), Error> {
    // One controller, or every replica of a replicated one, each in a box of its own.
    let mut controllers: Vec<BoxHandle> = Vec::new();
    let addrs = if deployment.controllers.is_empty() {
        let control = BoxBuilder::new("controller")
            .with_controller(Controller::new(deployment.placement()))
            .start()
            .await?;
        let addr = control.addr().to_string();
        controllers.push(control);
        vec![addr]
    } else {
        let addrs = free_addrs(deployment.controllers.len())?;
        for (i, spec) in deployment.controllers.iter().enumerate() {
            let replica =
                ControllerReplica::new(i, addrs.len(), Controller::new(deployment.placement()))?;
            controllers.push(
                BoxBuilder::new(&spec.name)
                    .with_controller_replica(i, replica, addrs.clone())
                    .start()
                    .await?,
            );
        }
        addrs
    };
    let mut boxes: Vec<BoxHandle> = Vec::new();
    for spec in &deployment.boxes {
        boxes.push(
            kinds(BoxBuilder::new(&spec.name))
                .controllers_at(addrs.clone())
                .start()
                .await?,
        );
    }
    for b in &boxes {
        b.ready().await?;
    }
    let clients: Vec<(usize, String)> = deployment
        .clients
        .iter()
        .filter_map(|c| {
            deployment
                .agents
                .iter()
                .find(|a| &a.id == c)
                .map(|a| (a.in_box.clone(), c.clone()))
        })
        .filter_map(|(in_box, c)| {
            deployment
                .boxes
                .iter()
                .position(|b| b.name == in_box)
                .map(|i| (i, c))
        })
        .collect();
    if clients.is_empty() {
        stopped().await;
    } else {
        let clients_done = async {
            for (i, id) in &clients {
                boxes[*i].wait_stopped(id).await;
            }
        };
        tokio::select! {
            _ = clients_done => {}
            _ = stopped() => {}
        }
    }
    for b in boxes {
        b.shutdown().await;
    }
    for c in controllers {
        c.shutdown().await;
    }
    Ok(())
}

/// `n` loopback addresses whose ports were free a moment ago (all held at once, so distinct):
/// the replicas of a controller must know each other's addresses before they start.
pub fn free_addrs(n: usize) -> Result<Vec<String>, Error> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.to_string()))
        .collect()
}

/// Prints `ovid: finished <id>` as each agent of `ids` stops (called once the box is ready, so
/// every agent placed in it has been started: one not running any more has already finished).
async fn report_finished(b: &BoxHandle, ids: &[String]) {
    // `wait_stopped` returns at once for an agent that is not running.
    let mut waits: futures::stream::FuturesUnordered<_> = ids
        .iter()
        .map(|id| async move {
            b.wait_stopped(id).await;
            id
        })
        .collect();
    use futures::StreamExt;
    while let Some(id) = waits.next().await {
        println!("ovid: finished {id}");
    }
    std::future::pending::<()>().await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Names the cause when a listener cannot be bound (a port in use, most often).
fn bind_error(e: Error, what: &str, addr: &str) -> Error {
    match e {
        Error::Io(io) if io.kind() == std::io::ErrorKind::AddrInUse => {
            Error::Io(std::io::Error::new(
                io.kind(),
                format!("{what} cannot listen on {addr}: the port is in use"),
            ))
        }
        Error::Io(io) => Error::Io(std::io::Error::new(
            io.kind(),
            format!("{what} cannot listen on {addr}: {io}"),
        )),
        other => other,
    }
}
