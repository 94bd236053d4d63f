//! GDB remote serial protocol client for QEMU 7.2's gdbstub over a unix socket: the mock
//! hypervisor's only way to see and change the guest.
//!
//! QEMU 7.2 behaviours this client is built around (see `qemu-notes.md`):
//! - `p`/`P` answer empty until `qXfer:features:read:target.xml` has been read, so `connect`
//!   reads it (and every `xi:include`) first and numbers registers from it.
//! - No `QStartNoAckMode`, but the stub never waits for acks, and **any byte received while the
//!   guest runs stops it**. So this client never sends a lone ack: it owes one after each reply
//!   and prefixes it to its next packet, which is only ever sent while the guest is stopped.
//!   While running, the only byte it sends is a deliberate interrupt (0x03).
//! - Requests can be pipelined: several packets go out in one write and the replies come back
//!   in order ([`Gdb::requests`]).
//! - No `X` (binary write). An x86 guest exit (isa-debug-exit) just closes the socket
//!   ([`Error::Closed`]); an arm64 semihosting exit sends `W<code>` first.
//! - x86: outside 64-bit mode, GPRs and `rip` read and write as 32 bits (the upper half of a
//!   write is dropped) and `r8`-`r15` read as 0; `rip` is the offset in `cs`, while breakpoints
//!   match the linear address (`cs.base + rip`).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::qemu::{Arch, QemuArch};

/// SIGINT: the stop signal after [`Gdb::interrupt`].
pub const SIGINT: u8 = 2;
/// SIGTRAP: the stop signal after a breakpoint or a single step.
pub const SIGTRAP: u8 = 5;

/// Default limit for one request/reply exchange while the guest is stopped.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of requests sent before reading their replies, so neither side's socket buffer fills
/// while the other is blocked writing.
const PIPELINE_WINDOW: usize = 16 * 1024;
/// From this many registers on, one `g` is cheaper than pipelined `p`s. Measured (QEMU 7.2, debug
/// and release alike): `g` about 30-34 µs on both arches, pipelined `p` about 16 µs plus 3.5 µs
/// per extra register.
const G_PACKET_THRESHOLD: usize = 6;
/// Guards against a stub that streams target descriptions forever.
const MAX_XML_BYTES: usize = 4 << 20;
const MAX_INCLUDE_DEPTH: usize = 8;

/// Errors of the gdb client; everything a stub or a dying QEMU can cause is one of these.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// No answer in time (while stopped) or no stop in time (while running).
    Timeout(String),
    /// The stub closed the connection: QEMU exited (the guest may have reported pass/fail).
    Closed,
    /// Malformed or unexpected data from the stub.
    Protocol(String),
    /// The stub answered `E<code>` to `request`.
    Stub {
        request: String,
        code: u8,
    },
    /// The stub answered empty: it does not implement `request`.
    Unsupported(String),
    UnknownRegister(String),
    /// A command other than interrupt/wait was attempted while the guest runs: sending it would
    /// stop the guest behind the caller's back.
    Running,
    /// `wait_stop` while the guest is stopped: no stop reply will come.
    NotRunning,
    /// A caller-supplied argument is out of range (e.g. a value wider than the register).
    Invalid(String),
}

impl Error {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "gdb socket: {e}"),
            Error::Timeout(what) => write!(f, "gdb: timed out waiting for {what}"),
            Error::Closed => write!(f, "gdb: QEMU closed the connection (did it exit?)"),
            Error::Protocol(m) => write!(f, "gdb protocol error: {m}"),
            Error::Stub { request, code } => {
                write!(f, "gdb stub answered E{code:02x} to {request}")
            }
            Error::Unsupported(r) => write!(f, "gdb stub does not support {r}"),
            Error::UnknownRegister(r) => write!(f, "gdb: no register named {r:?}"),
            Error::Running => write!(f, "gdb: the guest is running; wait_stop or interrupt first"),
            Error::NotRunning => write!(f, "gdb: the guest is stopped; nothing to wait for"),
            Error::Invalid(m) => write!(f, "gdb: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(e.to_string()),
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => Error::Closed,
            _ => Error::Io(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Why the guest stopped (a `T`, `S`, `W` or `X` stop reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopReason {
    pub kind: StopKind,
    /// The signal (`T`/`S`/`X`) or the exit status (`W`).
    pub signal: u8,
    /// The vCPU that stopped (gdb thread ids start at 1); QEMU makes it current for registers.
    pub thread: Option<u32>,
    /// The other `name:value` pairs of a `T` reply, e.g. `swbreak`, `watch`.
    pub pairs: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Stopped by a signal (`T`/`S`): breakpoint or step (SIGTRAP), interrupt (SIGINT).
    Signal,
    /// The process exited (`W`).
    Exited,
    /// The process was terminated by a signal (`X`).
    Terminated,
}

impl StopReason {
    pub fn is_trap(&self) -> bool {
        self.kind == StopKind::Signal && self.signal == SIGTRAP
    }
}

/// One register from the target description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegInfo {
    pub name: String,
    pub regnum: u32,
    pub bitsize: u32,
    /// The `<feature name=…>` it belongs to.
    pub feature: String,
    /// Byte offset in the `g` reply, when the register is part of it.
    pub g_offset: Option<usize>,
}

impl RegInfo {
    pub fn bytes(&self) -> usize {
        self.bitsize.div_ceil(8) as usize
    }
}

/// A connection to a stopped (or running) QEMU gdbstub.
pub struct Gdb {
    conn: Conn,
    arch: Arch,
    regs: Vec<RegInfo>,
    by_name: HashMap<String, usize>,
    /// Byte length of the `g` reply.
    g_len: usize,
    packet_size: usize,
    supported: String,
    binary_write: bool,
    timeout: Duration,
    running: bool,
    /// We received a packet and have not acked it yet; the ack rides on the next packet.
    ack_owed: bool,
    thread: Option<u32>,
    /// Console text the stub sent in `O` packets.
    output: Vec<u8>,
    /// Asynchronous `%` notifications (non-stop mode only; kept for inspection).
    notifications: Vec<Vec<u8>>,
}

impl Gdb {
    /// Connects to the gdbstub at `path` (retrying until QEMU has created the socket), then reads
    /// `qSupported`, the initial stop reason and the full target description.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Gdb> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    let retry = matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    );
                    if !retry {
                        return Err(Error::Io(e));
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout(format!("gdb socket {}", path.display())));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        let mut gdb = Gdb {
            conn: Conn::new(stream),
            arch: Arch::X86_64,
            regs: Vec::new(),
            by_name: HashMap::new(),
            g_len: 0,
            packet_size: 4096,
            supported: String::new(),
            binary_write: false,
            timeout: timeout.max(Duration::from_millis(100)),
            running: false,
            ack_owed: false,
            thread: None,
            output: Vec::new(),
            notifications: Vec::new(),
        };
        gdb.handshake()?;
        gdb.timeout = DEFAULT_TIMEOUT;
        Ok(gdb)
    }

    fn handshake(&mut self) -> Result<()> {
        // Not advertising multiprocess keeps thread ids plain ("01", not "p01.01").
        let replies = self.requests(&[
            b"qSupported:swbreak+;hwbreak+;vContSupported+".to_vec(),
            b"?".to_vec(),
            // Zero-length probe: an empty answer means no X packet (QEMU 7.2).
            b"X0,0:".to_vec(),
        ])?;
        self.supported = String::from_utf8_lossy(&replies[0]).into_owned();
        for feature in self.supported.split(';') {
            if let Some(size) = feature.strip_prefix("PacketSize=") {
                self.packet_size = usize::from_str_radix(size, 16)
                    .map_err(|_| Error::Protocol(format!("bad PacketSize {size:?}")))?
                    .clamp(256, 1 << 20);
            }
        }
        if !self.supported.contains("qXfer:features:read+") {
            return Err(Error::Unsupported("qXfer:features:read".into()));
        }
        let stop = parse_stop_reply(&replies[1])?;
        self.thread = stop.thread;
        self.binary_write = replies[2] == b"OK";

        let target = self.read_xfer_features("target.xml")?;
        let mut docs = HashMap::new();
        // Fetch the top-level includes together; nested ones (none in QEMU 7.2) come on demand.
        let includes = xml_includes(&target);
        for (name, text) in includes.iter().zip(self.read_xfer_many(&includes)?) {
            docs.insert(name.clone(), text);
        }
        docs.insert("target.xml".to_string(), target);
        let desc = {
            let mut fetch = |name: &str| -> Result<String> {
                match docs.get(name) {
                    Some(text) => Ok(text.clone()),
                    None => self.read_xfer_features(name),
                }
            };
            parse_target("target.xml", &mut fetch)?
        };
        self.arch = match desc.architecture.as_str() {
            "i386:x86-64" => Arch::X86_64,
            "aarch64" => Arch::Aarch64,
            other => return Err(Error::Unsupported(format!("architecture {other:?}"))),
        };
        self.regs = desc.regs;
        for (i, reg) in self.regs.iter().enumerate() {
            self.by_name.entry(reg.name.clone()).or_insert(i);
        }
        // The `g` reply holds a prefix of the registers in number order; its length says which.
        let g = self.read_g()?;
        self.g_len = g.len();
        assign_g_offsets(&mut self.regs, self.g_len);
        Ok(())
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The register table from the target description.
    pub fn registers(&self) -> &[RegInfo] {
        &self.regs
    }

    pub fn reg_info(&self, name: &str) -> Result<&RegInfo> {
        let idx = self.by_name.get(name).copied().or_else(|| {
            self.regs
                .iter()
                .position(|r| r.name.eq_ignore_ascii_case(name))
        });
        idx.map(|i| &self.regs[i])
            .ok_or_else(|| Error::UnknownRegister(name.to_string()))
    }

    /// The stub's `qSupported` reply.
    pub fn supported(&self) -> &str {
        &self.supported
    }

    pub fn packet_size(&self) -> usize {
        self.packet_size
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The thread (vCPU) that register and memory packets act on.
    pub fn current_thread(&self) -> Option<u32> {
        self.thread
    }

    /// Limit for each request/reply exchange while stopped (default 5 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Console output the stub forwarded in `O` packets since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Sends one raw packet payload (unescaped, without framing) and returns the reply payload.
    pub fn request(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut replies = self.requests(&[payload.to_vec()])?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Pipelines several packets: they are written together and the replies read in order.
    /// Only for packets that get exactly one reply (not `c`, `s`, `k`).
    pub fn requests(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        if self.running {
            return Err(Error::Running);
        }
        let mut replies = Vec::with_capacity(payloads.len());
        let mut start = 0;
        while start < payloads.len() {
            // Fill one window; always at least one packet.
            let mut end = start;
            let mut bytes = 0;
            let mut out = Vec::new();
            if self.ack_owed {
                out.push(b'+');
                self.ack_owed = false;
            }
            while end < payloads.len() && (end == start || bytes < PIPELINE_WINDOW) {
                let frame = frame_packet(&payloads[end]);
                bytes += frame.len();
                out.extend_from_slice(&frame);
                end += 1;
            }
            let deadline = Instant::now() + self.timeout;
            self.conn.send(&out, deadline)?;
            let mut nacks = 0;
            for payload in &payloads[start..end] {
                loop {
                    match self.conn.recv(deadline, || describe(payload))? {
                        Event::Ack => {}
                        Event::Nack => {
                            // The stub dropped a packet it could not verify. Resending is only
                            // unambiguous when it is the only one in flight.
                            if end - start > 1 || nacks >= 3 {
                                return Err(Error::Protocol(format!(
                                    "stub rejected {}",
                                    describe(payload)
                                )));
                            }
                            nacks += 1;
                            self.conn.send(&frame_packet(payload), deadline)?;
                        }
                        Event::Notification(n) => self.notifications.push(n),
                        Event::Packet(reply) => {
                            self.ack_owed = true;
                            replies.push(reply);
                            break;
                        }
                    }
                }
            }
            start = end;
        }
        Ok(replies)
    }

    /// One request that must answer `OK`.
    fn command(&mut self, payload: &[u8]) -> Result<()> {
        let reply = self.request(payload)?;
        expect_ok(payload, &reply)
    }

    fn read_g(&mut self) -> Result<Vec<u8>> {
        let reply = self.request(b"g")?;
        check_error(b"g", &reply)?;
        hex_decode(&reply)
    }

    /// Reads a register up to 64 bits wide, by its target-description name.
    pub fn read_reg(&mut self, name: &str) -> Result<u64> {
        let bytes = self.read_reg_bytes(name)?;
        le_to_u64(name, &bytes)
    }

    /// Reads a register of any width as its little-endian bytes.
    pub fn read_reg_bytes(&mut self, name: &str) -> Result<Vec<u8>> {
        let reg = self.reg_info(name)?.clone();
        let payload = format!("p{:x}", reg.regnum).into_bytes();
        let reply = self.request(&payload)?;
        decode_reg_reply(&payload, &reply, &reg)
    }

    /// Reads several registers: one `g` when they are all in it and there are enough of them,
    /// otherwise pipelined `p` packets (one round trip either way).
    pub fn read_regs(&mut self, names: &[&str]) -> Result<Vec<u64>> {
        let regs = names
            .iter()
            .map(|n| self.reg_info(n).cloned())
            .collect::<Result<Vec<_>>>()?;
        if regs.len() >= G_PACKET_THRESHOLD && regs.iter().all(|r| r.g_offset.is_some()) {
            let g = self.read_g()?;
            return regs
                .iter()
                .map(|r| {
                    let off = r.g_offset.unwrap_or_default();
                    let bytes = g.get(off..off + r.bytes()).ok_or_else(|| {
                        Error::Protocol(format!("g reply too short for {}", r.name))
                    })?;
                    le_to_u64(&r.name, bytes)
                })
                .collect();
        }
        let payloads: Vec<Vec<u8>> = regs
            .iter()
            .map(|r| format!("p{:x}", r.regnum).into_bytes())
            .collect();
        let replies = self.requests(&payloads)?;
        regs.iter()
            .zip(payloads.iter().zip(replies))
            .map(|(r, (p, reply))| le_to_u64(&r.name, &decode_reg_reply(p, &reply, r)?))
            .collect()
    }

    /// Writes a register up to 64 bits wide; the value must fit its width.
    pub fn write_reg(&mut self, name: &str, value: u64) -> Result<()> {
        self.write_regs(&[(name, value)])
    }

    /// Writes several registers with pipelined `P` packets.
    pub fn write_regs(&mut self, values: &[(&str, u64)]) -> Result<()> {
        let mut payloads = Vec::with_capacity(values.len());
        for &(name, value) in values {
            let reg = self.reg_info(name)?;
            let width = reg.bytes();
            if width < 8 && value >> (width * 8) != 0 {
                return Err(Error::Invalid(format!(
                    "{value:#x} does not fit {}-bit register {name}",
                    reg.bitsize
                )));
            }
            let mut bytes = value.to_le_bytes().to_vec();
            bytes.resize(width, 0);
            payloads.push(p_packet(reg.regnum, &bytes));
        }
        let replies = self.requests(&payloads)?;
        for (p, r) in payloads.iter().zip(replies) {
            expect_ok(p, &r)?;
        }
        Ok(())
    }

    /// Writes a register of any width from its little-endian bytes.
    pub fn write_reg_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let reg = self.reg_info(name)?;
        if bytes.len() != reg.bytes() {
            return Err(Error::Invalid(format!(
                "{name} is {} bytes, got {}",
                reg.bytes(),
                bytes.len()
            )));
        }
        let payload = p_packet(reg.regnum, bytes);
        self.command(&payload)
    }

    /// The program counter: `rip` on x86_64, `pc` on aarch64.
    pub fn read_pc(&mut self) -> Result<u64> {
        self.read_reg(pc_name(self.arch))
    }

    pub fn write_pc(&mut self, value: u64) -> Result<()> {
        self.write_reg(pc_name(self.arch), value)
    }

    /// Reads guest memory (virtual addresses as the current vCPU sees them, or guest-physical ones
    /// after [`Gdb::set_physical_memory_mode`]), in pipelined chunks.
    pub fn read_mem(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        // The hex reply must fit one packet (QEMU refuses more than PacketSize/2 bytes).
        let chunk = (self.packet_size - 8) / 2;
        let mut payloads = Vec::new();
        let mut lens = Vec::new();
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            let a = addr
                .checked_add(off as u64)
                .ok_or_else(|| wrap_error(addr, len))?;
            payloads.push(format!("m{a:x},{n:x}").into_bytes());
            lens.push(n);
            off += n;
        }
        let replies = self.requests(&payloads)?;
        let mut out = Vec::with_capacity(len);
        for ((p, n), reply) in payloads.iter().zip(lens).zip(replies) {
            check_error(p, &reply)?;
            let bytes = hex_decode(&reply)?;
            if bytes.len() != n {
                return Err(Error::Protocol(format!(
                    "{} returned {} bytes",
                    describe(p),
                    bytes.len()
                )));
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// Writes guest memory in pipelined chunks (`X` when the stub has it, else `M`).
    pub fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        // Room for "Maddr,len:" and the framing; binary may double under escaping.
        let chunk = (self.packet_size - 40) / 2;
        let mut payloads = Vec::new();
        for (i, part) in data.chunks(chunk).enumerate() {
            let a = addr
                .checked_add((i * chunk) as u64)
                .ok_or_else(|| wrap_error(addr, data.len()))?;
            let mut p;
            if self.binary_write {
                p = format!("X{a:x},{:x}:", part.len()).into_bytes();
                p.extend_from_slice(&escape_binary(part));
            } else {
                p = format!("M{a:x},{:x}:", part.len()).into_bytes();
                p.extend_from_slice(hex_encode(part).as_bytes());
            }
            payloads.push(p);
        }
        let replies = self.requests(&payloads)?;
        for (p, r) in payloads.iter().zip(replies) {
            expect_ok(p, &r)?;
        }
        Ok(())
    }

    /// Inserts a software breakpoint at a guest-virtual PC (all vCPUs; stops before executing).
    pub fn set_breakpoint(&mut self, addr: u64) -> Result<()> {
        let payload = format!("Z0,{addr:x},{}", self.arch.breakpoint_kind());
        self.command(payload.as_bytes())
    }

    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<()> {
        let payload = format!("z0,{addr:x},{}", self.arch.breakpoint_kind());
        self.command(payload.as_bytes())
    }

    /// Resumes all vCPUs and returns at once; follow with [`Gdb::wait_stop`].
    pub fn cont(&mut self) -> Result<()> {
        self.resume(b"c")
    }

    fn resume(&mut self, payload: &[u8]) -> Result<()> {
        if self.running {
            return Err(Error::Running);
        }
        let mut out = Vec::new();
        if self.ack_owed {
            // Still stopped at this point, so the ack cannot disturb the guest.
            out.push(b'+');
            self.ack_owed = false;
        }
        out.extend_from_slice(&frame_packet(payload));
        self.conn.send(&out, Instant::now() + self.timeout)?;
        self.running = true;
        Ok(())
    }

    /// Waits for the guest to stop. On timeout the guest keeps running (call [`Gdb::interrupt`]).
    /// [`Error::Closed`] means QEMU exited.
    pub fn wait_stop(&mut self, timeout: Duration) -> Result<StopReason> {
        if !self.running {
            return Err(Error::NotRunning);
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Never ack here: the guest may still be running. The ack rides on the next packet.
            let event = match self.conn.recv(deadline, || "a stop reply".to_string()) {
                Err(Error::Closed) => {
                    self.running = false;
                    return Err(Error::Closed);
                }
                other => other?,
            };
            match event {
                Event::Ack | Event::Nack => {}
                Event::Notification(n) => self.notifications.push(n),
                Event::Packet(p) => {
                    if let Some(text) = console_output(&p) {
                        self.output.extend_from_slice(&text);
                        continue;
                    }
                    self.ack_owed = true;
                    self.running = false;
                    let stop = parse_stop_reply(&p)?;
                    if stop.thread.is_some() {
                        self.thread = stop.thread;
                    }
                    return Ok(stop);
                }
            }
        }
    }

    /// Asks a running guest to stop (sends 0x03); the stop reply comes through `wait_stop`.
    /// Does nothing when the guest is already stopped.
    pub fn interrupt(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        // If the guest stopped on its own meanwhile, QEMU ignores the byte: still one reply.
        self.conn.send(&[0x03], Instant::now() + self.timeout)
    }

    /// Interrupts and waits for the resulting stop.
    pub fn halt(&mut self, timeout: Duration) -> Result<StopReason> {
        self.interrupt()?;
        self.wait_stop(timeout)
    }

    /// Executes one instruction on the current vCPU (see [`Gdb::select_thread`]).
    pub fn step(&mut self) -> Result<StopReason> {
        self.resume(b"s")?;
        let timeout = self.timeout;
        self.wait_stop(timeout)
    }

    /// Single-steps vCPU `tid` alone (`vCont;s`): the other vCPUs stay stopped, so none of them
    /// can run past a breakpoint the caller removed for the step.
    pub fn step_thread(&mut self, tid: u32) -> Result<StopReason> {
        self.resume(format!("vCont;s:{tid:x}").as_bytes())?;
        let timeout = self.timeout;
        self.wait_stop(timeout)
    }

    /// Resumes the vCPUs `tids` (`vCont;c:..;c:..`); the others stay stopped. Returns at once.
    pub fn cont_threads(&mut self, tids: &[u32]) -> Result<()> {
        let mut packet = String::from("vCont");
        for tid in tids {
            packet.push_str(&format!(";c:{tid:x}"));
        }
        self.resume(packet.as_bytes())
    }

    /// Resumes vCPU `tid` alone (`vCont;c`); the others stay stopped. Returns at once.
    pub fn cont_thread(&mut self, tid: u32) -> Result<()> {
        self.resume(format!("vCont;c:{tid:x}").as_bytes())
    }

    /// The vCPUs, as gdb thread ids (1, 2, ...).
    pub fn threads(&mut self) -> Result<Vec<u32>> {
        let mut threads = Vec::new();
        let mut reply = self.request(b"qfThreadInfo")?;
        loop {
            match reply.split_first() {
                Some((b'm', list)) => {
                    for id in list.split(|&b| b == b',') {
                        threads.extend(parse_thread_id(id)?);
                    }
                }
                Some((b'l', _)) => return Ok(threads),
                _ => {
                    check_error(b"qfThreadInfo", &reply)?;
                    return Err(Error::Unsupported("qfThreadInfo".into()));
                }
            }
            if threads.len() > 4096 {
                return Err(Error::Protocol("endless thread list".into()));
            }
            reply = self.request(b"qsThreadInfo")?;
        }
    }

    /// Makes `tid` current for register/memory packets (`Hg`) and for `step` (`Hc`).
    pub fn select_thread(&mut self, tid: u32) -> Result<()> {
        let payloads = [
            format!("Hg{tid:x}").into_bytes(),
            format!("Hc{tid:x}").into_bytes(),
        ];
        let replies = self.requests(&payloads)?;
        for (p, r) in payloads.iter().zip(replies) {
            expect_ok(p, &r)?;
        }
        self.thread = Some(tid);
        Ok(())
    }

    /// Switches `m`/`M` between virtual (default) and physical addresses (QEMU extension).
    pub fn set_physical_memory_mode(&mut self, physical: bool) -> Result<()> {
        let payload = format!("Qqemu.PhyMemMode:{}", u8::from(physical));
        self.command(payload.as_bytes())
    }

    /// Detaches; QEMU removes breakpoints and lets the guest run.
    pub fn detach(mut self) -> Result<()> {
        if self.running {
            self.halt(self.timeout)?;
        }
        self.command(b"D")
    }

    /// Kills QEMU (`k` has no reply; QEMU exits).
    pub fn kill(mut self) -> Result<()> {
        if self.running {
            // `k` would be taken for an interrupt byte anyway; stop first so it is parsed.
            match self.halt(self.timeout) {
                Ok(_) => {}
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        if self.ack_owed {
            out.push(b'+');
        }
        out.extend_from_slice(&frame_packet(b"k"));
        match self.conn.send(&out, Instant::now() + self.timeout) {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads one target-description document (`qXfer:features:read`).
    pub fn read_xfer_features(&mut self, annex: &str) -> Result<String> {
        Ok(self
            .read_xfer_many(&[annex.to_string()])?
            .pop()
            .unwrap_or_default())
    }

    /// Reads several documents, pipelining their chunks in lockstep.
    fn read_xfer_many(&mut self, annexes: &[String]) -> Result<Vec<String>> {
        // QEMU caps a chunk near PacketSize/2; escaping can double the rest.
        let chunk = (self.packet_size - 8) / 2;
        let mut docs: Vec<Vec<u8>> = vec![Vec::new(); annexes.len()];
        let mut open: Vec<usize> = (0..annexes.len()).collect();
        while !open.is_empty() {
            let payloads: Vec<Vec<u8>> = open
                .iter()
                .map(|&i| {
                    format!(
                        "qXfer:features:read:{}:{:x},{chunk:x}",
                        annexes[i],
                        docs[i].len()
                    )
                    .into_bytes()
                })
                .collect();
            let replies = self.requests(&payloads)?;
            let mut still_open = Vec::new();
            for ((&i, p), reply) in open.iter().zip(&payloads).zip(replies) {
                match reply.split_first() {
                    Some((&kind @ (b'm' | b'l'), data)) => {
                        docs[i].extend_from_slice(&unescape_binary(data)?);
                        if docs[i].len() > MAX_XML_BYTES {
                            return Err(Error::Protocol(format!("{} too large", annexes[i])));
                        }
                        // An empty 'm' would loop forever.
                        if kind == b'm' && !data.is_empty() {
                            still_open.push(i);
                        }
                    }
                    _ => {
                        check_error(p, &reply)?;
                        return Err(Error::Unsupported(describe(p)));
                    }
                }
            }
            open = still_open;
        }
        docs.into_iter()
            .zip(annexes)
            .map(|(d, name)| {
                String::from_utf8(d).map_err(|_| Error::Protocol(format!("{name} is not UTF-8")))
            })
            .collect()
    }
}

fn pc_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "rip",
        Arch::Aarch64 => "pc",
    }
}

fn wrap_error(addr: u64, len: usize) -> Error {
    Error::Invalid(format!("{addr:#x}+{len:#x} wraps the address space"))
}

fn p_packet(regnum: u32, bytes: &[u8]) -> Vec<u8> {
    format!("P{regnum:x}={}", hex_encode(bytes)).into_bytes()
}

fn decode_reg_reply(request: &[u8], reply: &[u8], reg: &RegInfo) -> Result<Vec<u8>> {
    if reply.is_empty() {
        // QEMU 7.2 answers empty before the target description is read; ours always is.
        return Err(Error::Unsupported(describe(request)));
    }
    check_error(request, reply)?;
    let bytes = hex_decode(reply)?;
    if bytes.len() != reg.bytes() {
        return Err(Error::Protocol(format!(
            "{} returned {} bytes for {}-bit {}",
            describe(request),
            bytes.len(),
            reg.bitsize,
            reg.name
        )));
    }
    Ok(bytes)
}

fn le_to_u64(name: &str, bytes: &[u8]) -> Result<u64> {
    if bytes.len() > 8 {
        return Err(Error::Invalid(format!(
            "{name} is {} bits; use read_reg_bytes",
            bytes.len() * 8
        )));
    }
    let mut v = [0u8; 8];
    v[..bytes.len()].copy_from_slice(bytes);
    Ok(u64::from_le_bytes(v))
}

/// A short printable form of a request for error messages (binary data cut off).
fn describe(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == b':' && payload.first() != Some(&b'q'))
        .unwrap_or(payload.len())
        .min(64);
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// `E<hex>` replies become [`Error::Stub`].
fn check_error(request: &[u8], reply: &[u8]) -> Result<()> {
    if reply.len() == 3 && reply[0] == b'E' {
        if let Ok(code) = u8::from_str_radix(&String::from_utf8_lossy(&reply[1..]), 16) {
            return Err(Error::Stub {
                request: describe(request),
                code,
            });
        }
    }
    Ok(())
}

fn expect_ok(request: &[u8], reply: &[u8]) -> Result<()> {
    match reply {
        b"OK" => Ok(()),
        b"" => Err(Error::Unsupported(describe(request))),
        _ => {
            check_error(request, reply)?;
            Err(Error::Protocol(format!(
                "{} answered {:?}",
                describe(request),
                String::from_utf8_lossy(reply)
            )))
        }
    }
}

/// The text of an `O<hex>` console-output packet (only meaningful while waiting for a stop).
fn console_output(packet: &[u8]) -> Option<Vec<u8>> {
    let hex = packet.strip_prefix(b"O")?;
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    hex_decode(hex).ok()
}

// ---------------------------------------------------------------------------------------------
// Framing

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Ack,
    Nack,
    Packet(Vec<u8>),
    Notification(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    NeedMore,
    /// A byte outside any packet (noise); skipped.
    Skip,
    Event(Event, usize),
    /// A complete frame that failed its checksum or run-length decoding.
    Bad(String, usize),
}

/// Frames a payload: `$payload#xx`. The payload must already be escaped if binary.
fn frame_packet(payload: &[u8]) -> Vec<u8> {
    let sum = checksum(payload);
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    out.extend_from_slice(payload);
    out.extend_from_slice(&[
        b'#',
        HEX_DIGITS[usize::from(sum >> 4)],
        HEX_DIGITS[usize::from(sum & 15)],
    ]);
    out
}

/// The modulo-256 byte sum.
fn checksum(data: &[u8]) -> u8 {
    // Plain index loops here and in the hex helpers: the tests and `cargo xtask` run unoptimized
    // builds, where iterator adapters cost a function call per byte (4x slower on a 4 KiB read).
    let mut sum = 0u64;
    let mut i = 0;
    while i < data.len() {
        sum += data[i] as u64;
        i += 1;
    }
    sum as u8
}

/// Decodes the first event in `buf`.
fn decode_event(buf: &[u8]) -> Decoded {
    let Some(&first) = buf.first() else {
        return Decoded::NeedMore;
    };
    match first {
        b'+' => Decoded::Event(Event::Ack, 1),
        b'-' => Decoded::Event(Event::Nack, 1),
        b'$' | b'%' => {
            let Some(hash) = find_byte(buf, b'#') else {
                return Decoded::NeedMore;
            };
            if buf.len() < hash + 3 {
                return Decoded::NeedMore;
            }
            let consumed = hash + 3;
            let body = &buf[1..hash];
            let sum = checksum(body);
            let given = std::str::from_utf8(&buf[hash + 1..hash + 3])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            if given != Some(sum) {
                return Decoded::Bad(format!("checksum mismatch (computed {sum:02x})"), consumed);
            }
            match expand_rle(body) {
                Ok(data) if first == b'$' => Decoded::Event(Event::Packet(data), consumed),
                Ok(data) => Decoded::Event(Event::Notification(data), consumed),
                Err(e) => Decoded::Bad(e, consumed),
            }
        }
        _ => Decoded::Skip,
    }
}

/// Expands run-length encoding: `X*n` is X followed by `n - 29` more copies of X.
fn expand_rle(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    // `contains` on bytes is memchr in the (optimized) standard library.
    if !body.contains(&b'*') {
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'*' {
            let prev = *out.last().ok_or("run-length marker at packet start")?;
            let n = *body.get(i + 1).ok_or("run-length marker without count")?;
            if !(b' '..=126).contains(&n) {
                return Err(format!("bad run-length count {n:#x}"));
            }
            out.extend(std::iter::repeat_n(prev, (n - 29) as usize));
            i += 2;
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Escapes binary data for `X`: `#`, `$`, `}` and `*` become `}` followed by the byte ^ 0x20.
fn escape_binary(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            out.extend_from_slice(&[b'}', b ^ 0x20]);
        } else {
            out.push(b);
        }
    }
    out
}

fn unescape_binary(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    let mut it = data.iter();
    while let Some(&b) = it.next() {
        if b == b'}' {
            let next = it
                .next()
                .ok_or_else(|| Error::Protocol("escape at end of binary data".into()))?;
            out.push(next ^ 0x20);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Hex digit values; 0xff marks a non-digit.
const HEX_VALUES: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX_DIGITS[i] as usize] = i as u8;
        t[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn hex_encode(data: &[u8]) -> String {
    let mut s = vec![0u8; data.len() * 2];
    let out = &mut s[..];
    let mut i = 0;
    while i < data.len() {
        out[2 * i] = HEX_DIGITS[(data[i] >> 4) as usize];
        out[2 * i + 1] = HEX_DIGITS[(data[i] & 15) as usize];
        i += 1;
    }
    // Only ASCII hex digits were written.
    String::from_utf8(s).unwrap_or_default()
}

fn hex_decode(hex: &[u8]) -> Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return Err(Error::Protocol(format!(
            "odd-length hex {:?}",
            String::from_utf8_lossy(hex)
        )));
    }
    let mut v = vec![0u8; hex.len() / 2];
    let out = &mut v[..];
    let mut bad = 0u8;
    let mut i = 0;
    while i < out.len() {
        let h = HEX_VALUES[hex[2 * i] as usize];
        let l = HEX_VALUES[hex[2 * i + 1] as usize];
        // 0xff has bit 4 set, which no digit value has: one test after the loop.
        bad |= h | l;
        out[i] = (h << 4) | (l & 15);
        i += 1;
    }
    if bad & 0x10 != 0 {
        let shown = &hex[..hex.len().min(32)];
        return Err(Error::Protocol(format!(
            "bad hex {:?}",
            String::from_utf8_lossy(shown)
        )));
    }
    Ok(v)
}

/// The first `needle` in `buf`. Reply bodies are ASCII except in binary `qXfer` data, so the
/// standard library's vectorised `str::find` covers the valid-UTF-8 prefix, which is all of it
/// for hex replies.
fn find_byte(buf: &[u8], needle: u8) -> Option<usize> {
    let valid = match std::str::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
    };
    if let Some(i) = valid.find(char::from(needle)) {
        return Some(i);
    }
    buf[valid.len()..]
        .iter()
        .position(|&b| b == needle)
        .map(|i| i + valid.len())
}

/// Parses a thread id: `1f`, `p1.2` (multiprocess) or `-1`/`0` (all/any: none).
fn parse_thread_id(id: &[u8]) -> Result<Option<u32>> {
    let text = std::str::from_utf8(id).map_err(|_| Error::Protocol("binary thread id".into()))?;
    let tid = match text.strip_prefix('p') {
        Some(rest) => rest.split_once('.').map_or("-1", |(_, t)| t),
        None => text,
    };
    if tid == "-1" || tid == "0" || tid.is_empty() {
        return Ok(None);
    }
    u32::from_str_radix(tid, 16)
        .map(Some)
        .map_err(|_| Error::Protocol(format!("bad thread id {text:?}")))
}

fn parse_stop_reply(p: &[u8]) -> Result<StopReason> {
    let bad = || Error::Protocol(format!("bad stop reply {:?}", String::from_utf8_lossy(p)));
    let (&kind, rest) = p.split_first().ok_or_else(bad)?;
    let kind = match kind {
        b'T' | b'S' => StopKind::Signal,
        b'W' => StopKind::Exited,
        b'X' => StopKind::Terminated,
        b'E' => {
            check_error(b"?", p)?;
            return Err(bad());
        }
        _ => return Err(bad()),
    };
    let sig = rest.get(..2).ok_or_else(bad)?;
    let signal =
        u8::from_str_radix(std::str::from_utf8(sig).map_err(|_| bad())?, 16).map_err(|_| bad())?;
    let mut stop = StopReason {
        kind,
        signal,
        thread: None,
        pairs: Vec::new(),
    };
    let text = String::from_utf8_lossy(&rest[2..]);
    for field in text.split(';').filter(|f| !f.is_empty()) {
        let (name, value) = field.split_once(':').unwrap_or((field, ""));
        if name == "thread" {
            stop.thread = parse_thread_id(value.as_bytes())?;
        } else {
            stop.pairs.push((name.to_string(), value.to_string()));
        }
    }
    Ok(stop)
}

/// The socket plus bytes received but not yet decoded.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(8192),
        }
    }

    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<()> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next event, reading until `deadline`; `what` names the awaited reply for errors.
    fn recv(&mut self, deadline: Instant, what: impl Fn() -> String) -> Result<Event> {
        loop {
            match decode_event(&self.buf) {
                Decoded::Event(event, n) => {
                    self.buf.drain(..n);
                    return Ok(event);
                }
                Decoded::Skip => {
                    self.buf.drain(..1);
                    continue;
                }
                Decoded::Bad(why, _) => {
                    // Asking for a resend with '-' could hit a running guest or reorder
                    // pipelined replies; a unix socket does not corrupt data, so give up.
                    return Err(Error::Protocol(format!(
                        "{why} while waiting for {}",
                        what()
                    )));
                }
                Decoded::NeedMore => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(what()));
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::Timeout(what()))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target description

struct TargetDesc {
    architecture: String,
    regs: Vec<RegInfo>,
}

/// Parses `root` and its `xi:include`s in document order, numbering registers the way gdb does:
/// each `<reg>` takes its `regnum` attribute or the previous number plus one.
fn parse_target(root: &str, fetch: &mut dyn FnMut(&str) -> Result<String>) -> Result<TargetDesc> {
    let mut desc = TargetDesc {
        architecture: String::new(),
        regs: Vec::new(),
    };
    let mut next = 0u32;
    parse_doc(root, fetch, &mut desc, &mut next, 0)?;
    desc.regs.sort_by_key(|r| r.regnum);
    Ok(desc)
}

fn parse_doc(
    name: &str,
    fetch: &mut dyn FnMut(&str) -> Result<String>,
    desc: &mut TargetDesc,
    next: &mut u32,
    depth: usize,
) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(Error::Protocol(format!(
            "xi:include nesting too deep at {name}"
        )));
    }
    let text = fetch(name)?;
    let mut feature = String::new();
    let mut in_arch = false;
    for item in xml_items(&text) {
        match item {
            XmlItem::Text(t) if in_arch => desc.architecture.push_str(t.trim()),
            XmlItem::Text(_) => {}
            XmlItem::Tag {
                name: tag,
                attrs,
                closing,
            } => match (tag, closing) {
                ("architecture", false) => in_arch = true,
                ("architecture", true) => in_arch = false,
                ("feature", false) => feature = attr(&attrs, "name").unwrap_or_default(),
                ("xi:include", false) => {
                    let href = attr(&attrs, "href").ok_or_else(|| {
                        Error::Protocol(format!("xi:include without href in {name}"))
                    })?;
                    parse_doc(&href, fetch, desc, next, depth + 1)?;
                }
                ("reg", false) => {
                    let reg_name = attr(&attrs, "name")
                        .ok_or_else(|| Error::Protocol(format!("<reg> without name in {name}")))?;
                    let num = |key: &str| -> Result<Option<u32>> {
                        attr(&attrs, key)
                            .map(|v| {
                                v.parse::<u32>().map_err(|_| {
                                    Error::Protocol(format!("bad {key}={v:?} for {reg_name}"))
                                })
                            })
                            .transpose()
                    };
                    let bitsize = num("bitsize")?.ok_or_else(|| {
                        Error::Protocol(format!("<reg {reg_name}> without bitsize"))
                    })?;
                    let regnum = num("regnum")?.unwrap_or(*next);
                    *next = regnum + 1;
                    desc.regs.push(RegInfo {
                        name: reg_name,
                        regnum,
                        bitsize,
                        feature: feature.clone(),
                        g_offset: None,
                    });
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// Marks the registers the `g` reply holds: consecutive numbers from 0 whose bytes fit `g_len`.
fn assign_g_offsets(regs: &mut [RegInfo], g_len: usize) {
    let mut offset = 0;
    for (expected, reg) in (0u32..).zip(regs.iter_mut()) {
        if reg.regnum != expected || offset + reg.bytes() > g_len {
            break;
        }
        reg.g_offset = Some(offset);
        offset += reg.bytes();
    }
}

fn xml_includes(text: &str) -> Vec<String> {
    xml_items(text)
        .into_iter()
        .filter_map(|item| match item {
            XmlItem::Tag {
                name: "xi:include",
                attrs,
                closing: false,
            } => attr(&attrs, "href"),
            _ => None,
        })
        .collect()
}

#[derive(Debug)]
enum XmlItem<'a> {
    Text(&'a str),
    Tag {
        name: &'a str,
        attrs: Vec<(&'a str, &'a str)>,
        closing: bool,
    },
}

/// A tolerant tokenizer for the small XML subset of target descriptions: comments,
/// declarations and processing instructions are skipped, attributes are read from start tags.
fn xml_items(text: &str) -> Vec<XmlItem<'_>> {
    let mut items = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            items.push(XmlItem::Text(rest));
            break;
        };
        if lt > 0 {
            items.push(XmlItem::Text(&rest[..lt]));
        }
        rest = &rest[lt..];
        let end_marker = if rest.starts_with("<!--") { "-->" } else { ">" };
        let Some(end) = rest.find(end_marker) else {
            break;
        };
        let tag = &rest[1..end];
        rest = &rest[end + end_marker.len()..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let (closing, tag) = match tag.strip_prefix('/') {
            Some(t) => (true, t),
            None => (false, tag.trim_end_matches('/')),
        };
        let name_end = tag
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(tag.len());
        items.push(XmlItem::Tag {
            name: &tag[..name_end],
            attrs: parse_attrs(&tag[name_end..]),
            closing,
        });
    }
    items
}

fn parse_attrs(mut s: &str) -> Vec<(&str, &str)> {
    let mut attrs = Vec::new();
    loop {
        s = s.trim_start();
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq].trim();
        let after = s[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = after[1..].find(quote) else {
            break;
        };
        attrs.push((key, &after[1..1 + close]));
        s = &after[close + 2..];
    }
    attrs
}

fn attr(attrs: &[(&str, &str)], key: &str) -> Option<String> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| {
        v.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_checksum_matches_byte_sum() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 131 + 7) as u8 | 0x80).collect();
        for len in [0, 1, 7, 8, 9, 1023, 1024, 1031, 5000] {
            let slow = data[..len].iter().fold(0u8, |s, &b| s.wrapping_add(b));
            assert_eq!(checksum(&data[..len]), slow, "len {len}");
        }
        assert_eq!(find_byte(b"ab\xff\xfe#x", b'#'), Some(4));
        assert_eq!(find_byte(b"abc#", b'#'), Some(3));
        assert_eq!(find_byte(b"abc", b'#'), None);
    }

    #[test]
    fn frames_with_checksum() {
        assert_eq!(frame_packet(b"g"), b"$g#67");
        assert_eq!(frame_packet(b"c"), b"$c#63");
        assert_eq!(frame_packet(b""), b"$#00");
    }

    #[test]
    fn decodes_recorded_replies() {
        // Recorded from QEMU 7.2: ack then reply.
        let buf = b"+$T05thread:01;#07";
        assert_eq!(decode_event(buf), Decoded::Event(Event::Ack, 1));
        assert_eq!(
            decode_event(&buf[1..]),
            Decoded::Event(Event::Packet(b"T05thread:01;".to_vec()), 17)
        );
        assert_eq!(decode_event(b"$OK#9"), Decoded::NeedMore);
        assert_eq!(decode_event(b"$OK"), Decoded::NeedMore);
        assert!(matches!(decode_event(b"$OK#9b"), Decoded::Bad(..)));
        assert_eq!(
            decode_event(b"%Stop:T05#99"),
            Decoded::Event(Event::Notification(b"Stop:T05".to_vec()), 12)
        );
        assert_eq!(decode_event(b"-"), Decoded::Event(Event::Nack, 1));
        assert_eq!(decode_event(b"\x03"), Decoded::Skip);
    }

    #[test]
    fn run_length_decoding() {
        // "0* " is "0000" (space = 32 → 3 more copies).
        assert_eq!(expand_rle(b"0* ").unwrap(), b"0000");
        assert_eq!(expand_rle(b"f0*\"1").unwrap(), b"f0000001");
        assert!(expand_rle(b"*  ").is_err());
        assert!(expand_rle(b"0*").is_err());
        // A full frame whose checksum covers the encoded bytes.
        let frame = frame_packet(b"00*'ff");
        match decode_event(&frame) {
            Decoded::Event(Event::Packet(p), _) => {
                assert_eq!(p, b"000000000000ff");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_escaping_round_trips() {
        let data = [0u8, b'#', b'$', b'}', b'*', 0xff, b'a'];
        let esc = escape_binary(&data);
        assert!(!esc.contains(&b'#') && !esc.contains(&b'$') && !esc.contains(&b'*'));
        assert_eq!(unescape_binary(&esc).unwrap(), data);
        assert!(unescape_binary(b"ab}").is_err());
    }

    #[test]
    fn hex() {
        assert_eq!(hex_encode(&[0xde, 0xad, 0x01]), "dead01");
        assert_eq!(
            hex_decode(b"f0ff000000000000").unwrap(),
            [0xf0, 0xff, 0, 0, 0, 0, 0, 0]
        );
        assert!(hex_decode(b"f").is_err());
        assert!(hex_decode(b"zz").is_err());
        assert_eq!(
            le_to_u64("rip", &hex_decode(b"f0ff000000000000").unwrap()).unwrap(),
            0xfff0
        );
    }

    #[test]
    fn stop_replies() {
        let s = parse_stop_reply(b"T05thread:02;swbreak:;").unwrap();
        assert_eq!(
            (s.kind, s.signal, s.thread),
            (StopKind::Signal, SIGTRAP, Some(2))
        );
        assert_eq!(s.pairs, [("swbreak".to_string(), String::new())]);
        assert!(s.is_trap());
        let s = parse_stop_reply(b"T02thread:p01.03;").unwrap();
        assert_eq!((s.signal, s.thread), (SIGINT, Some(3)));
        assert_eq!(parse_stop_reply(b"S05").unwrap().thread, None);
        let w = parse_stop_reply(b"W21;process:1").unwrap();
        assert_eq!((w.kind, w.signal), (StopKind::Exited, 0x21));
        assert_eq!(parse_stop_reply(b"X09").unwrap().kind, StopKind::Terminated);
        assert!(parse_stop_reply(b"T").is_err());
        assert!(parse_stop_reply(b"OK").is_err());
        assert!(matches!(
            parse_stop_reply(b"E01"),
            Err(Error::Stub { code: 1, .. })
        ));
    }

    #[test]
    fn thread_ids() {
        assert_eq!(parse_thread_id(b"01").unwrap(), Some(1));
        assert_eq!(parse_thread_id(b"p01.0a").unwrap(), Some(10));
        assert_eq!(parse_thread_id(b"-1").unwrap(), None);
        assert!(parse_thread_id(b"xyz").is_err());
    }

    #[test]
    fn console_output_packets() {
        assert_eq!(console_output(b"O48690a").unwrap(), b"Hi\n");
        assert_eq!(console_output(b"OK"), None);
    }

    #[test]
    fn replies_and_errors() {
        assert!(expect_ok(b"Z0,1,1", b"OK").is_ok());
        assert!(matches!(
            expect_ok(b"Z0,1,1", b""),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            expect_ok(b"M0,1:00", b"E14"),
            Err(Error::Stub { code: 0x14, .. })
        ));
        assert_eq!(describe(b"M1000,4:deadbeef"), "M1000,4");
    }

    /// Recorded QEMU 7.2 x86_64 documents, shortened.
    const TARGET_X86: &str = r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>i386:x86-64</architecture><xi:include href="i386-64bit.xml"/></target>"#;
    const CORE_X86: &str = r#"<?xml version="1.0"?>
<!-- Copyright (C) 2010-2017 Free Software Foundation, Inc. -->
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<feature name="org.gnu.gdb.i386.core">
  <flags id="x64_eflags" size="4">
	<field name="ID" start="21" end="21"/>
  </flags>
  <reg name="rax" bitsize="64" type="int64" regnum="0"/>
  <reg name="rbx" bitsize="64" type="int64"/>
  <reg name="rip" bitsize="64" type="code_ptr" regnum="16"/>
  <reg name="eflags" bitsize="32" type="x64_eflags"/>
  <reg name="cs" bitsize="32" type="int32"/>
  <!--reg name="cs_base" bitsize="64" type="int64"/>
  <reg name="ss_base" bitsize="64" type="int64"/-->
  <reg name="fs_base" bitsize="64" type="int64"/>
  <reg name="st0" bitsize="80" type="i387_ext"/>
</feature>"#;

    #[test]
    fn parses_target_description_with_includes() {
        let mut fetched = Vec::new();
        let mut fetch = |name: &str| -> Result<String> {
            fetched.push(name.to_string());
            match name {
                "target.xml" => Ok(TARGET_X86.into()),
                "i386-64bit.xml" => Ok(CORE_X86.into()),
                _ => Err(Error::Unsupported(name.into())),
            }
        };
        let desc = parse_target("target.xml", &mut fetch).unwrap();
        assert_eq!(fetched, ["target.xml", "i386-64bit.xml"]);
        assert_eq!(desc.architecture, "i386:x86-64");
        let names: Vec<(&str, u32, u32)> = desc
            .regs
            .iter()
            .map(|r| (r.name.as_str(), r.regnum, r.bitsize))
            .collect();
        assert_eq!(
            names,
            [
                ("rax", 0, 64),
                ("rbx", 1, 64),
                ("rip", 16, 64),
                ("eflags", 17, 32),
                ("cs", 18, 32),
                ("fs_base", 19, 64),
                ("st0", 20, 80),
            ]
        );
        assert_eq!(desc.regs[0].feature, "org.gnu.gdb.i386.core");
        // Gap after rbx: `g` offsets stop there.
        let mut regs = desc.regs;
        assign_g_offsets(&mut regs, 1000);
        assert_eq!(regs[1].g_offset, Some(8));
        assert_eq!(regs[2].g_offset, None);
    }

    #[test]
    fn include_loops_are_bounded() {
        let mut fetch = |_: &str| -> Result<String> { Ok(r#"<xi:include href="a.xml"/>"#.into()) };
        assert!(parse_target("target.xml", &mut fetch).is_err());
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        for doc in [
            r#"<reg name="x" bitsize="zz"/>"#,
            r#"<reg bitsize="64"/>"#,
            r#"<reg name="x"/>"#,
            "<reg name='x' bitsize='64",
            "<<<>>>",
            "<!-- unterminated",
        ] {
            let mut fetch = |_: &str| -> Result<String> { Ok(doc.to_string()) };
            let _ = parse_target("target.xml", &mut fetch);
        }
        let items = xml_items(r#"<reg name='x&amp;y' bitsize="8"/>"#);
        match &items[0] {
            XmlItem::Tag { attrs, .. } => assert_eq!(attr(attrs, "name").unwrap(), "x&y"),
            other => panic!("{other:?}"),
        }
    }
}
