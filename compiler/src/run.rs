//! `ovidc run`: build a system, then start its controller (or, with `controller |>
//! replicate(n)`, its n controller replicas) and every box as processes on loopback, stream
//! their output prefixed with the box's name, and stop them all when the system's clients have
//! finished, on Ctrl-C, or when a box dies. A replicated controller outlives the death of a
//! minority of its replicas, and so does the run. With `--data-dir`, every box keeps its agents'
//! durable stores in a directory of its own (`<dir>/<box>`), which outlives the run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::build::{self, Built};
use crate::pipeline::{Failure, report};

/// What a child process said or did, as the threads reading it report it.
enum Event {
    /// A line of its output.
    Line {
        name: String,
        line: String,
        stderr: bool,
    },
    /// Its standard output closed (it exited).
    Closed { name: String },
    /// Ctrl-C.
    Interrupted,
}

/// `ovidc run FILE [--data-dir [DIR]]`: see the module docs. `data_dir`: where the boxes keep
/// their durable stores (`Some(None)`: `<target>/ovid-data/<system>`), if anywhere.
#[allow(clippy::option_option)]
pub fn run(file: &Path, data_dir: Option<Option<PathBuf>>) -> ExitCode {
    match build_and_run(file, data_dir) {
        Ok(code) => code,
        Err(f) => {
            report(&f, false);
            ExitCode::FAILURE
        }
    }
}

/// `ovidc test FILE ...`: builds the system, then runs its binary's deterministic simulation
/// (`<binary> test ARGS`), whose report and exit code are the command's.
pub fn test(file: &Path, args: &[String]) -> ExitCode {
    let run = || -> Result<ExitCode, Failure> {
        let (_, binary) = build_for_run(file)?;
        let status = Command::new(&binary)
            .arg("test")
            .args(args)
            .status()
            .map_err(|e| Failure::Io(format!("cannot run `{}`: {e}", binary.display())))?;
        Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    };
    match run() {
        Ok(code) => code,
        Err(f) => {
            report(&f, false);
            ExitCode::FAILURE
        }
    }
}

/// Generates and compiles the crate of `file` under the shared target directory.
fn build_for_run(file: &Path) -> Result<(Built, std::path::PathBuf), Failure> {
    let out = build::target_dir().join("ovid").join(crate_dir_name(file));
    let built = build::generate(file, &out)?;
    let binary = build::cargo_build(&built)?;
    Ok((built, binary))
}

/// The directory of a file's crate under `<target>/ovid`: its stem and a hash of its full
/// path, so that two files of one name in different folders never share a crate.
fn crate_dir_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "system".into());
    let full = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let hash = ovid_stdlib::proxy::fnv1a(full.to_string_lossy().as_bytes());
    format!("{stem}-{:08x}", hash as u32)
}

#[allow(clippy::option_option)]
fn build_and_run(file: &Path, data_dir: Option<Option<PathBuf>>) -> Result<ExitCode, Failure> {
    let (built, binary) = build_for_run(file)?;
    let data_dir = data_dir.map(|d| {
        d.unwrap_or_else(|| {
            build::target_dir()
                .join("ovid-data")
                .join(&built.deployment.system)
        })
    });
    let (tx, rx) = mpsc::channel();
    let ctrlc_tx = tx.clone();
    // Ctrl-C, SIGTERM or SIGHUP stop the boxes in order (they run in process groups of their
    // own, so only ovidc hears the signal); a second one is not handled.
    let _ = ctrlc::set_handler(move || {
        let _ = ctrlc_tx.send(Event::Interrupted);
    });
    let mut system = System {
        children: Vec::new(),
        tx,
        data_dir,
    };
    let result = system.run(&binary, &built, &rx);
    system.stop();
    result
}

/// The running processes.
struct System {
    children: Vec<(String, Child)>,
    tx: mpsc::Sender<Event>,
    /// Where each box keeps its durable stores (`<dir>/<box>`), if anywhere.
    data_dir: Option<PathBuf>,
}

impl System {
    fn run(
        &mut self,
        binary: &Path,
        built: &Built,
        rx: &mpsc::Receiver<Event>,
    ) -> Result<ExitCode, Failure> {
        let replicas = &built.deployment.controllers;
        let controller = if replicas.is_empty() {
            let controller = free_loopback_addr().map_err(|e| {
                Failure::Io(format!("cannot find a free port for the controller: {e}"))
            })?;
            self.spawn(
                "controller",
                Command::new(binary).args(["controller", "--listen", &controller]),
            )?;
            self.wait_for(&["controller"], "ovid: controller listening", rx)?;
            controller
        } else {
            let addrs = ovid::launch::free_addrs(replicas.len()).map_err(|e| {
                Failure::Io(format!("cannot find free ports for the controller: {e}"))
            })?;
            let all = addrs.join(",");
            for (i, r) in replicas.iter().enumerate() {
                self.spawn(
                    &r.name,
                    Command::new(binary).args([
                        "controller",
                        "--replica",
                        &i.to_string(),
                        "--controllers",
                        &all,
                    ]),
                )?;
            }
            let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
            self.wait_for(&names, "ovid: controller listening", rx)?;
            all
        };
        // How many controller replicas may die before the controller stops answering.
        let tolerated = replicas.len().saturating_sub(1) / 2;
        let mut lost: Vec<String> = Vec::new();
        for b in &built.deployment.boxes {
            let mut command = Command::new(binary);
            command.args(["box", &b.name, "--controller", &controller]);
            if let Some(dir) = &self.data_dir {
                command.arg("--data-dir").arg(dir.join(&b.name));
            }
            self.spawn(&b.name, &mut command)?;
        }
        let mut waiting: Vec<&str> = built
            .deployment
            .clients
            .iter()
            .map(String::as_str)
            .collect();
        if waiting.is_empty() {
            eprintln!(
                "ovidc: {} running; Ctrl-C stops it",
                built.deployment.system
            );
        }
        loop {
            match rx.recv() {
                Ok(Event::Line { name, line, stderr }) => {
                    if let Some(id) = line.strip_prefix("ovid: finished ") {
                        waiting.retain(|c| *c != id);
                        if waiting.is_empty() && !built.deployment.clients.is_empty() {
                            eprintln!("ovidc: every client has finished; stopping");
                            return Ok(ExitCode::SUCCESS);
                        }
                    } else {
                        show(&name, &line, stderr);
                    }
                }
                Ok(Event::Closed { name })
                    if replicas.iter().any(|r| r.name == name) && lost.len() < tolerated =>
                {
                    let status = self.status_of(&name);
                    eprintln!(
                        "ovidc: controller replica `{name}` stopped ({status}); the other replicas go on"
                    );
                    lost.push(name);
                }
                Ok(Event::Closed { name }) => {
                    let status = self.status_of(&name);
                    return Err(Failure::Io(format!(
                        "box `{name}` stopped unexpectedly ({status}); its last lines above say why"
                    )));
                }
                Ok(Event::Interrupted) | Err(_) => {
                    eprintln!("ovidc: stopping");
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), Failure> {
        // A process group of its own: Ctrl-C reaches ovidc only, which stops the boxes in order.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(command, 0);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::Io(format!("cannot start box `{name}`: {e}")))?;
        let open = Arc::new(AtomicUsize::new(2));
        if let Some(out) = child.stdout.take() {
            forward(name, out, false, self.tx.clone(), open.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(name, err, true, self.tx.clone(), open);
        }
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Waits for each of `names` to print a line starting with `prefix` (showing what else
    /// they say).
    fn wait_for(
        &mut self,
        names: &[&str],
        prefix: &str,
        rx: &mpsc::Receiver<Event>,
    ) -> Result<(), Failure> {
        let mut left: Vec<&str> = names.to_vec();
        while let Some(&name) = left.first() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Event::Line { name: n, line, .. })
                    if left.contains(&n.as_str()) && line.starts_with(prefix) =>
                {
                    left.retain(|l| *l != n);
                }
                Ok(Event::Line { name, line, stderr }) => show(&name, &line, stderr),
                Ok(Event::Closed { name: n }) if left.contains(&n.as_str()) => {
                    return Err(Failure::Io(format!(
                        "`{n}` did not start ({}); its output above says why",
                        self.status_of(&n)
                    )));
                }
                Ok(Event::Closed { .. }) => {}
                Ok(Event::Interrupted) => return Err(Failure::Io("interrupted".into())),
                Err(_) => return Err(Failure::Io(format!("`{name}` did not start within 30 s"))),
            }
        }
        Ok(())
    }

    fn status_of(&mut self, name: &str) -> String {
        let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) else {
            return "unknown".into();
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        "still running".into()
    }

    /// Asks every process to stop (SIGTERM), boxes first and the controller last; kills what
    /// has not stopped after a few seconds.
    fn stop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            terminate(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, child) in self.children.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("ovidc: `{name}` did not stop; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Prints one line of a child's output, prefixed with its name.
fn show(name: &str, line: &str, stderr: bool) {
    if stderr {
        eprintln!("[{name}] {line}");
    } else {
        println!("[{name}] {line}");
    }
}

/// Reads a child's output line by line on a thread of its own. `open` counts the child's
/// streams still open: the reader that closes the last one says the child is gone, so no line
/// of either stream (its last words are often on stderr) comes after that news.
fn forward(
    name: &str,
    stream: impl Read + Send + 'static,
    stderr: bool,
    tx: mpsc::Sender<Event>,
    open: Arc<AtomicUsize>,
) {
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx
                .send(Event::Line {
                    name: name.clone(),
                    line,
                    stderr,
                })
                .is_err()
            {
                return;
            }
        }
        if open.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = tx.send(Event::Closed { name });
        }
    });
}

#[cfg(unix)]
fn terminate(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // The child is ours and not yet reaped, so its pid names it; if it has just exited, the
    // signal is lost and `wait` reaps it anyway.
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

#[cfg(not(unix))]
fn terminate(child: &mut Child) {
    let _ = child.kill();
}

/// A loopback address with a port that was free a moment ago.
fn free_loopback_addr() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}
