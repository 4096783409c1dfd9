//! `rust-kvs`: run the key-value store example.
//!
//! ```text
//! rust-kvs local                                  # both agents in one box
//! rust-kvs store --listen 127.0.0.1:7100          # box 1: the controller and the store
//! rust-kvs client --controller 127.0.0.1:7100     # box 2: the client; exits when done
//! ```

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The Ovid key-value store, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The store and the client co-located in one box.
    Local,
    /// The box with the controller and the store; runs until Ctrl-C.
    Store {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: String,
    },
    /// The box with the client; exits when the client is done.
    Client {
        /// Address of the controller's box.
        #[arg(long, default_value = "127.0.0.1:7100")]
        controller: String,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Local => rust_kvs::run_co_located().await?.shutdown().await,
        Command::Store { listen } => {
            let b = rust_kvs::start_store(&listen).await?;
            println!("store listening on {}", b.addr());
            tokio::signal::ctrl_c().await?;
            println!("{:?}", b.metrics());
            b.shutdown().await;
        }
        Command::Client { controller } => {
            let b = rust_kvs::run_client(&controller).await?;
            eprintln!("{:?}", b.metrics());
            b.shutdown().await;
        }
    }
    Ok(())
}
