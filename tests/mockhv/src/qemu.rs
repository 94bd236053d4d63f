//! QEMU runner shared by `cargo xtask run/test` and the end-to-end tests: finds (or installs) QEMU,
//! builds its command line per architecture, captures the serial console and maps exit codes.
//!
//! Exit-code contract (both architectures): the firmware exits with 33 on success and 35 on
//! failure (x86 `isa-debug-exit` values 0x10/0x11, arm64 semihosting `SYS_EXIT` 33/35). Code 0 is
//! what a triple fault (x86, `-no-reboot`) or PSCI `SYSTEM_OFF` (arm64) produce, so it is never a pass.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Exit code of a passing run (x86: `isa-debug-exit` value 0x10; arm64: semihosting exit 33).
pub const EXIT_PASS: i32 = 33;
/// Exit code of a failing run (x86: `isa-debug-exit` value 0x11; arm64: semihosting exit 35).
pub const EXIT_FAIL: i32 = 35;

/// The Debian packages that provide both QEMU binaries.
const QEMU_PACKAGES: [&str; 2] = ["qemu-system-x86", "qemu-system-arm"];

/// A guest architecture. The type and its host-free facts (name, target triple, RAM layout) are
/// the model crate's, which knows no QEMU; [`QemuArch`] adds the QEMU binary and its arguments.
pub use hvmodel::Arch;

/// What running an [`Arch`] in QEMU takes: the binary, its package and arguments.
pub trait QemuArch: Copy {
    fn qemu_binary(self) -> &'static str;
    fn debian_package(self) -> &'static str;
    /// Machine, CPU, memory, console and exit-device arguments (no image, no `-smp`).
    fn qemu_args(self, memory_mb: u32) -> Vec<String>;
    /// What a plain exit code 0 means on this architecture, for failure messages.
    fn zero_exit_meaning(self) -> &'static str;
}

impl QemuArch for Arch {
    fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    fn debian_package(self) -> &'static str {
        match self {
            Arch::X86_64 => QEMU_PACKAGES[0],
            Arch::Aarch64 => QEMU_PACKAGES[1],
        }
    }

    fn qemu_args(self, memory_mb: u32) -> Vec<String> {
        let mut args: Vec<String> = match self {
            Arch::X86_64 => vec!["-machine", "q35", "-cpu", "max"],
            Arch::Aarch64 => vec!["-machine", "virt", "-cpu", "max"],
        }
        .into_iter()
        .map(String::from)
        .collect();
        args.push("-m".into());
        args.push(format!("{memory_mb}M"));
        if self == Arch::Aarch64 {
            // Not on x86: `-nographic` sets `graphics=off`, on which SeaBIOS opens its serial
            // console (terminal control sequences, its banner) on the console the runs read.
            // The arguments after it say everything else it would (no display, no monitor, the
            // serial port on stdio).
            args.push("-nographic".into());
        }
        args.extend(
            [
                "-no-reboot",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-display",
                "none",
            ]
            .map(String::from),
        );
        match self {
            // The firmware's only way to report a result with a code other than 0.
            // No NIC: its iPXE option ROM would only print its banner and wait for Ctrl-B.
            Arch::X86_64 => args.extend(
                [
                    "-device",
                    "isa-debug-exit,iobase=0xf4,iosize=0x04",
                    "-nic",
                    "none",
                ]
                .map(String::from),
            ),
            // PSCI SYSTEM_OFF always exits 0; semihosting SYS_EXIT carries the real code.
            // target=native: QEMU serves semihosting itself, also with a debugger attached
            // (`cargo xtask run --gdb`; target=auto would forward it to the debugger).
            Arch::Aarch64 => args.extend([
                "-semihosting-config".into(),
                "enable=on,target=native".into(),
            ]),
        }
        args
    }

    fn zero_exit_meaning(self) -> &'static str {
        match self {
            Arch::X86_64 => "triple fault or reset",
            Arch::Aarch64 => "PSCI SYSTEM_OFF or reset",
        }
    }
}

/// How a QEMU process ended, other than by the pass/fail contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (not by us: our own kill on timeout is `Outcome::TimedOut`).
    Signal(i32),
}

/// The verdict of one QEMU run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Unexpected(Exit),
    TimedOut,
}

impl Outcome {
    /// Maps an exit code using the 33/35 contract.
    pub fn from_code(code: i32) -> Outcome {
        match code {
            EXIT_PASS => Outcome::Pass,
            EXIT_FAIL => Outcome::Fail,
            other => Outcome::Unexpected(Exit::Code(other)),
        }
    }

    fn from_status(status: ExitStatus) -> Outcome {
        if let Some(code) = status.code() {
            return Outcome::from_code(code);
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                return Outcome::Unexpected(Exit::Signal(sig));
            }
        }
        Outcome::Unexpected(Exit::Code(-1))
    }
}

/// Guest RAM when a run does not say otherwise.
pub const DEFAULT_MEMORY_MB: u32 = 256;

/// Everything needed to start one QEMU.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub arch: Arch,
    /// `-kernel IMAGE`; `None` boots the machine's own firmware (SeaBIOS on x86, nothing on arm64).
    pub image: Option<PathBuf>,
    pub smp: u32,
    pub memory_mb: u32,
    pub append: Option<String>,
    /// Wall-clock limit counted from spawn; `Qemu::wait` kills QEMU when it passes.
    pub timeout: Duration,
    /// Stream the console to our stdout as it arrives (it is captured either way), without
    /// terminal control sequences (see [`EchoFilter`]).
    pub echo: bool,
    /// Print the QEMU command line (one `== QEMU:` line, shell-quoted) before starting it.
    pub show_command: bool,
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// One vCPU, 256 MiB, 30 s, no echo.
    pub fn new(arch: Arch, image: Option<PathBuf>) -> QemuConfig {
        QemuConfig {
            arch,
            image,
            smp: 1,
            memory_mb: DEFAULT_MEMORY_MB,
            append: None,
            timeout: Duration::from_secs(30),
            echo: false,
            show_command: false,
            extra_args: Vec::new(),
        }
    }

    /// The command line a person can paste into a shell: the binary and [`Self::args`], each
    /// word quoted where the shell would split or expand it.
    pub fn command_line(&self) -> String {
        let mut words = vec![self.arch.qemu_binary().to_string()];
        words.extend(
            self.args()
                .iter()
                .map(|a| shell_quote(&a.to_string_lossy())),
        );
        words.join(" ")
    }

    /// The full argument list (without the binary).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = self
            .arch
            .qemu_args(self.memory_mb)
            .into_iter()
            .map(OsString::from)
            .collect();
        args.push("-smp".into());
        args.push(self.smp.to_string().into());
        if let Some(image) = &self.image {
            args.push("-kernel".into());
            args.push(image.clone().into_os_string());
        }
        if let Some(append) = &self.append {
            args.push("-append".into());
            args.push(append.into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub arch: Arch,
    pub outcome: Outcome,
    /// `None` when QEMU died from a signal (including our kill on timeout).
    pub exit_code: Option<i32>,
    pub console: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timeout: Duration,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// One line saying what happened, meant for assertion messages and CI logs.
    pub fn summary(&self) -> String {
        let last = last_line(&self.console);
        let last = if last.is_empty() {
            "(no console output)".to_string()
        } else {
            format!("last console line: {last}")
        };
        let arch = self.arch;
        match self.outcome {
            Outcome::Pass => format!("QEMU {arch} passed in {:.2?}", self.elapsed),
            Outcome::Fail => {
                format!("QEMU {arch} reported failure (exit code {EXIT_FAIL}); {last}")
            }
            Outcome::TimedOut => format!(
                "QEMU {arch} timed out after {}; {last}",
                fmt_duration(self.timeout)
            ),
            Outcome::Unexpected(Exit::Code(0)) => format!(
                "QEMU {arch} exited with code 0 ({}, not a pass); {last}",
                arch.zero_exit_meaning()
            ),
            Outcome::Unexpected(Exit::Code(1)) if !self.stderr.trim().is_empty() => format!(
                "QEMU {arch} exited with code 1 (QEMU error: {})",
                last_line(&self.stderr)
            ),
            Outcome::Unexpected(Exit::Code(code)) => {
                format!("QEMU {arch} exited with unexpected code {code}; {last}")
            }
            Outcome::Unexpected(Exit::Signal(sig)) => {
                format!("QEMU {arch} was killed by signal {sig}; {last}")
            }
        }
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `word` as one shell word: unchanged if it has only characters no shell treats specially,
/// otherwise in single quotes.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What the echo passes to the terminal: the console without terminal control sequences, so a
/// firmware's (SeaBIOS's serial console: `ESC c`, `ESC [?7l` turning line wrap off, `ESC [2J`)
/// cannot leave the terminal changed after the run. Drops `ESC` with the sequence it starts
/// (CSI `ESC [ ... final`, or `ESC` and one byte) and carriage returns; keeps everything
/// else. Stateful, so a sequence split across two reads is still dropped.
#[derive(Default)]
pub struct EchoFilter {
    state: EscState,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum EscState {
    #[default]
    Text,
    /// After `ESC`.
    Escape,
    /// Inside `ESC [`, until a final byte (0x40..=0x7e).
    Csi,
}

impl EchoFilter {
    /// The bytes of `input` that reach the terminal.
    pub fn filter(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            self.state = match (self.state, b) {
                (EscState::Text, 0x1b) => EscState::Escape,
                (EscState::Text, b'\r') => EscState::Text,
                (EscState::Text, b) => {
                    out.push(b);
                    EscState::Text
                }
                (EscState::Escape, b'[') => EscState::Csi,
                (EscState::Escape, _) => EscState::Text,
                (EscState::Csi, 0x40..=0x7e) => EscState::Text,
                (EscState::Csi, _) => EscState::Csi,
            };
        }
        out
    }
}

/// Captured output of one pipe, with a condition variable so waiters wake when bytes arrive.
#[derive(Default)]
struct Capture {
    state: Mutex<CaptureState>,
    changed: Condvar,
}

#[derive(Default)]
struct CaptureState {
    bytes: Vec<u8>,
    eof: bool,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureState> {
        // A reader thread that panicked leaves valid bytes behind; keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().bytes).into_owned()
    }

    fn spawn_reader(
        self: &Arc<Self>,
        mut pipe: impl Read + Send + 'static,
        echo: bool,
    ) -> std::io::Result<JoinHandle<()>> {
        let capture = Arc::clone(self);
        std::thread::Builder::new()
            .name("qemu-output".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                let mut filter = EchoFilter::default();
                loop {
                    let n = match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    if echo {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&filter.filter(&buf[..n]));
                        let _ = out.flush();
                    }
                    capture.lock().bytes.extend_from_slice(&buf[..n]);
                    capture.changed.notify_all();
                }
                capture.lock().eof = true;
                capture.changed.notify_all();
            })
    }

    /// Waits until `needle` appears (true) or the pipe closes or `timeout` passes (false).
    fn wait_for(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if needle.is_empty() || state.bytes.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let now = Instant::now();
            if state.eof || now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits (bounded) for the reader to see end-of-file, so a finished run has all its output.
    fn wait_eof(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.eof {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running QEMU. Dropping it kills and reaps the process.
pub struct Qemu {
    arch: Arch,
    child: Child,
    started: Instant,
    timeout: Duration,
    console: Arc<Capture>,
    stderr: Arc<Capture>,
    readers: Vec<JoinHandle<()>>,
    /// Set once the process has been reaped, so `wait` and `Drop` do not reap twice.
    finished: Option<(Outcome, Option<i32>, Duration)>,
}

impl Qemu {
    /// Starts QEMU (installing it first when missing and allowed to, see [`ensure_qemu`]).
    pub fn spawn(config: &QemuConfig) -> anyhow::Result<Qemu> {
        let binary = ensure_qemu(config.arch)?;
        if let Some(image) = &config.image {
            if !image.is_file() {
                bail!("{} image {} does not exist", config.arch, image.display());
            }
        }
        if config.show_command {
            println!("== QEMU: {}", config.command_line());
        }
        let mut child = Command::new(&binary)
            .args(config.args())
            // With a terminal on stdin, `-serial stdio` would switch it to raw mode.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let started = Instant::now();
        let console = Arc::new(Capture::default());
        let stderr = Arc::new(Capture::default());
        let mut readers = Vec::new();
        let pipes = (child.stdout.take(), child.stderr.take());
        let (Some(out), Some(err)) = pipes else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("QEMU's output pipes were not captured");
        };
        let spawned = console
            .spawn_reader(out, config.echo)
            .and_then(|h| {
                readers.push(h);
                stderr.spawn_reader(err, false)
            })
            .map(|h| readers.push(h));
        let qemu = Qemu {
            arch: config.arch,
            child,
            started,
            timeout: config.timeout,
            console,
            stderr,
            readers,
            finished: None,
        };
        // On error `qemu` is dropped here, which kills the child.
        spawned.context("starting the console reader thread")?;
        Ok(qemu)
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time left before the configured timeout.
    pub fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.started.elapsed())
    }

    /// The console (QEMU's stdout) captured so far.
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// QEMU's stderr captured so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until `needle` appears on the console; false on timeout or when QEMU closed it.
    pub fn wait_for_console(&self, needle: &str, timeout: Duration) -> bool {
        self.console.wait_for(needle.as_bytes(), timeout)
    }

    /// Non-blocking: the outcome if QEMU has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<Outcome>> {
        if let Some((outcome, ..)) = self.finished {
            return Ok(Some(outcome));
        }
        match self.child.try_wait().context("polling QEMU")? {
            Some(status) => {
                let elapsed = self.started.elapsed();
                let outcome = Outcome::from_status(status);
                self.finished = Some((outcome, status.code(), elapsed));
                Ok(Some(outcome))
            }
            None => Ok(None),
        }
    }

    /// Waits for QEMU to exit, killing it when the configured timeout (counted from spawn) passes.
    pub fn wait(&mut self) -> anyhow::Result<RunResult> {
        // Polling keeps this std-only; 1 ms is small next to QEMU's own exit latency.
        let deadline = self.started + self.timeout;
        while self.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                self.kill_and_reap()?;
                let elapsed = self.started.elapsed();
                self.finished = Some((Outcome::TimedOut, None, elapsed));
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let Some((outcome, exit_code, elapsed)) = self.finished else {
            bail!("QEMU finished without a recorded status");
        };
        // QEMU has exited, so the pipes close; the bound only guards against a forked holder.
        self.console.wait_eof(Duration::from_secs(1));
        self.stderr.wait_eof(Duration::from_secs(1));
        Ok(RunResult {
            arch: self.arch,
            outcome,
            exit_code,
            console: self.console(),
            stderr: self.stderr(),
            elapsed,
            timeout: self.timeout,
        })
    }

    /// Kills QEMU now (if it is still running) and returns the result.
    pub fn kill(&mut self) -> anyhow::Result<RunResult> {
        if self.try_wait()?.is_none() {
            self.kill_and_reap()?;
            self.finished = Some((
                Outcome::Unexpected(Exit::Signal(9)),
                None,
                self.started.elapsed(),
            ));
        }
        self.wait()
    }

    fn kill_and_reap(&mut self) -> anyhow::Result<()> {
        // kill() fails only if the child was already reaped, which `finished` rules out.
        let _ = self.child.kill();
        self.child.wait().context("reaping QEMU")?;
        Ok(())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.finished.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The readers end once the pipes close; detach rather than risk blocking in drop.
        self.readers.clear();
    }
}

/// Finds `arch`'s QEMU on PATH. When it is missing: as root, installs the Debian packages
/// (non-interactively, `apt-get update` only if the first attempt fails); otherwise returns an
/// error whose message is exactly the command to run.
pub fn ensure_qemu(arch: Arch) -> anyhow::Result<PathBuf> {
    if let Some(path) = find_on_path(arch.qemu_binary()) {
        return Ok(path);
    }
    let packages = QEMU_PACKAGES.join(" ");
    let install = format!("apt-get install -y --no-install-recommends {packages}");
    if !is_root() {
        bail!("sudo {install}");
    }
    // Parallel tests would otherwise fight over the dpkg lock.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = find_on_path(arch.qemu_binary()) {
        return Ok(path);
    }
    println!("installing QEMU: {install}");
    let apt = |args: &[&str]| -> bool {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(QEMU_PACKAGES);
    // Stale package lists are the usual reason a first attempt fails.
    let installed = apt(&args) || (apt(&["update"]) && apt(&args));
    if !installed {
        bail!("installing QEMU failed; run: {install}");
    }
    find_on_path(arch.qemu_binary())
        .ok_or_else(|| anyhow!("{} still missing after: {install}", arch.qemu_binary()))
}

fn find_on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Effective uid 0, read from `/proc/self/status` (no libc), falling back to `id -u`.
fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(euid) = parse_status_euid(&status) {
            return euid == 0;
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn parse_status_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Fields: real, effective, saved, filesystem.
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Outcome::from_code(33), Outcome::Pass);
        assert_eq!(Outcome::from_code(35), Outcome::Fail);
        assert_eq!(Outcome::from_code(0), Outcome::Unexpected(Exit::Code(0)));
    }

    #[test]
    fn command_lines() {
        let mut cfg = QemuConfig::new(Arch::X86_64, Some("/img.elf".into()));
        cfg.smp = 2;
        cfg.append = Some("log=debug".into());
        let args: Vec<String> = cfg
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert_eq!(
            joined,
            "-machine q35 -cpu max -m 256M -no-reboot -serial stdio -monitor none -display none \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -nic none -smp 2 -kernel /img.elf \
             -append log=debug"
        );
        cfg.append = Some("pv.log=debug pv.relay=0x20:1".into());
        assert!(
            cfg.command_line()
                .starts_with("qemu-system-x86_64 -machine q35 "),
            "{}",
            cfg.command_line()
        );
        assert!(
            cfg.command_line()
                .ends_with(" -kernel /img.elf -append 'pv.log=debug pv.relay=0x20:1'"),
            "{}",
            cfg.command_line()
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        let arm = QemuConfig::new(Arch::Aarch64, None).args();
        let arm: Vec<_> = arm.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            arm.join(" "),
            "-machine virt -cpu max -m 256M -nographic -no-reboot -serial stdio -monitor none \
             -display none -semihosting-config enable=on,target=native -smp 1"
        );
    }

    /// SeaBIOS's serial console opens with these; none may reach the terminal, even split
    /// across reads, and the text around them must.
    #[test]
    fn the_echo_drops_terminal_control_sequences() {
        let mut f = EchoFilter::default();
        assert_eq!(
            f.filter(b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n"),
            b"SeaBIOS (version 1.16)\n"
        );
        let mut out = f.filter(b"a\x1b[?");
        out.extend(f.filter(b"7lb\x1b"));
        out.extend(f.filter(b"cc"));
        assert_eq!(out, b"abc");
        assert_eq!(f.filter(b"[vp0] INFO  x\n"), b"[vp0] INFO  x\n");
    }

    #[test]
    fn summaries_are_one_line() {
        let mut r = RunResult {
            arch: Arch::X86_64,
            outcome: Outcome::TimedOut,
            exit_code: None,
            console: "boot\nstuck here\n\n".into(),
            stderr: String::new(),
            elapsed: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        };
        assert_eq!(
            r.summary(),
            "QEMU x86_64 timed out after 30s; last console line: stuck here"
        );
        r.outcome = Outcome::Unexpected(Exit::Code(0));
        r.exit_code = Some(0);
        assert!(r
            .summary()
            .starts_with("QEMU x86_64 exited with code 0 (triple fault or reset, not a pass)"));
        assert!(!r.summary().contains('\n'));
    }

    #[test]
    fn euid_from_proc_status() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_euid(status), Some(0));
        assert_eq!(parse_status_euid("Name: x\n"), None);
    }
}
