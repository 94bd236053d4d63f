//! End-to-end checks of the QEMU runner and the gdb client against real QEMU, with no paravisor
//! image: x86 stops at SeaBIOS's reset vector, arm64 `virt` at address 0, and small programs are
//! written into guest RAM through the gdbstub. A missing QEMU fails these tests with the command
//! that installs it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mockhv::gdb::{Error, Gdb, StopKind, SIGTRAP};
use mockhv::qemu::{Arch, Exit, Outcome, Qemu, QemuConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn socket_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mockhv-{}-{test}.sock", std::process::id()))
}

/// Starts `arch` halted at reset with a gdbstub and connects to it.
fn start(arch: Arch, test: &str) -> (Qemu, Gdb) {
    let mut cfg = QemuConfig::new(arch, None);
    cfg.gdb_socket = Some(socket_path(test));
    cfg.timeout = Duration::from_secs(60);
    // Failing (not skipping) when QEMU is missing: the message is the install command.
    let qemu = Qemu::spawn(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let gdb = Gdb::connect(socket_path(test), CONNECT_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "connecting to {arch} gdbstub: {e}; stderr: {}",
            qemu.stderr()
        )
    });
    assert_eq!(gdb.arch(), arch);
    (qemu, gdb)
}

/// Each vCPU is a gdb thread with its own registers; `select_thread` picks the one packets use.
#[test]
fn smp_vcpus_are_threads() {
    let mut cfg = QemuConfig::new(Arch::Aarch64, None);
    cfg.smp = 2;
    cfg.gdb_socket = Some(socket_path("smp"));
    let qemu = Qemu::spawn(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let mut gdb = Gdb::connect(socket_path("smp"), CONNECT_TIMEOUT).unwrap();
    assert_eq!(gdb.threads().unwrap(), [1, 2]);
    gdb.select_thread(2).unwrap();
    gdb.write_reg("x5", 0x222).unwrap();
    gdb.select_thread(1).unwrap();
    gdb.write_reg("x5", 0x111).unwrap();
    assert_eq!(gdb.read_reg("x5").unwrap(), 0x111);
    gdb.select_thread(2).unwrap();
    assert_eq!(gdb.read_reg("x5").unwrap(), 0x222);
    assert_eq!(gdb.current_thread(), Some(2));
    kill(qemu, gdb);
}

fn process_gone(pid: u32) -> bool {
    // Reaped processes have no /proc entry (a zombie would still have one).
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills through gdb and checks that QEMU is gone.
fn kill(mut qemu: Qemu, gdb: Gdb) {
    let pid = qemu.pid();
    gdb.kill().expect("gdb kill");
    let result = qemu.wait().expect("wait");
    assert_ne!(result.outcome, Outcome::TimedOut, "{}", result.summary());
    assert!(process_gone(pid));
}

#[test]
fn x86_reset_vector_registers_memory_breakpoint() {
    let (qemu, mut gdb) = start(Arch::X86_64, "x86-basics");
    assert_eq!(gdb.read_reg("rip").unwrap(), 0xfff0);
    assert_eq!(gdb.read_reg("cs").unwrap(), 0xf000);
    assert!(gdb.reg_info("fs_base").is_ok() && gdb.reg_info("cr3").is_ok());
    assert!(matches!(
        gdb.read_reg("no_such_reg"),
        Err(Error::UnknownRegister(_))
    ));
    assert_eq!(gdb.threads().unwrap(), [1]);
    gdb.select_thread(1).unwrap();

    // The reset vector holds a far jump (0xEA offset16 segment16) into the BIOS.
    let reset = gdb.read_mem(0xffff0, 5).unwrap();
    assert_eq!(reset[0], 0xea, "reset vector {reset:02x?}");
    let target_ip = u64::from(u16::from_le_bytes([reset[1], reset[2]]));
    let target_cs = u64::from(u16::from_le_bytes([reset[3], reset[4]]));

    // g and pipelined p agree.
    let names = ["rax", "rbx", "rcx", "rdx", "rip", "eflags", "cs", "cr0"];
    let via_g = gdb.read_regs(&names).unwrap();
    let via_p = gdb.read_regs(&names[4..]).unwrap();
    assert_eq!(&via_g[4..], &via_p[..]);
    assert_eq!(via_g[4], 0xfff0);

    // Breakpoints match the linear PC (cs.base + ip in real mode) and stop before the instruction.
    let linear = target_cs * 16 + target_ip;
    gdb.set_breakpoint(linear).unwrap();
    gdb.cont().unwrap();
    let stop = gdb.wait_stop(STOP_TIMEOUT).unwrap();
    assert!(stop.is_trap(), "{stop:?}");
    assert_eq!(stop.thread, Some(1));
    assert_eq!(gdb.read_reg("rip").unwrap(), target_ip);
    assert_eq!(gdb.read_reg("cs").unwrap(), target_cs);
    gdb.remove_breakpoint(linear).unwrap();

    // Single steps move rip.
    let mut last = gdb.read_pc().unwrap();
    for _ in 0..3 {
        let stop = gdb.step().unwrap();
        assert_eq!((stop.kind, stop.signal), (StopKind::Signal, SIGTRAP));
        let rip = gdb.read_pc().unwrap();
        assert_ne!(rip, last);
        last = rip;
    }

    // RAM round trip, including a write that spans several packets.
    let small = [0xde, 0xad, 0xbe, 0xef, 0x23, 0x24, 0x7d, 0x2a];
    gdb.write_mem(0x1000, &small).unwrap();
    assert_eq!(gdb.read_mem(0x1000, small.len()).unwrap(), small);
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    gdb.write_mem(0x2000, &big).unwrap();
    assert_eq!(gdb.read_mem(0x2000, big.len()).unwrap(), big);

    // Register writes, including width checks. Outside long mode QEMU keeps only the low 32 bits
    // of a GPR write (quirk the mock must know about at the 32-bit PVH entry).
    gdb.write_reg("rax", 0x1122_3344_5566_7788).unwrap();
    assert_eq!(gdb.read_reg("rax").unwrap(), 0x5566_7788);
    assert!(matches!(
        gdb.write_reg("eflags", 1 << 40),
        Err(Error::Invalid(_))
    ));
    // Nothing may be sent while running, except the interrupt.
    gdb.cont().unwrap();
    assert!(matches!(gdb.read_reg("rip"), Err(Error::Running)));
    let stop = gdb.halt(STOP_TIMEOUT).unwrap();
    assert_eq!(stop.kind, StopKind::Signal);
    assert!(gdb.read_reg("rip").is_ok());
    kill(qemu, gdb);
}

/// Writes `mov al, code; out 0xf4, al; jmp $` at 0x7c00 and runs it: isa-debug-exit's code.
fn x86_exit_with(code: u8, test: &str) -> Outcome {
    let (mut qemu, mut gdb) = start(Arch::X86_64, test);
    gdb.write_mem(0x7c00, &[0xb0, code, 0xe6, 0xf4, 0xeb, 0xfe])
        .unwrap();
    gdb.write_regs(&[("cs", 0), ("rip", 0x7c00)]).unwrap();
    gdb.cont().unwrap();
    // x86 exits without a W packet: the socket just closes.
    assert!(matches!(gdb.wait_stop(STOP_TIMEOUT), Err(Error::Closed)));
    let result = qemu.wait().unwrap();
    result.outcome
}

#[test]
fn x86_exit_codes_pass_and_fail() {
    assert_eq!(x86_exit_with(0x10, "x86-pass"), Outcome::Pass);
    assert_eq!(x86_exit_with(0x11, "x86-fail"), Outcome::Fail);
}

const A64_NOP: u32 = 0xd503_201f;
const A64_B_SELF: u32 = 0x1400_0000;
const A64_HLT_SEMIHOST: u32 = 0xd45e_0000; // hlt #0xf000
const RAM: u64 = 0x4000_0000;

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn aarch64_reset_registers_memory_breakpoint() {
    let (qemu, mut gdb) = start(Arch::Aarch64, "a64-basics");
    assert_eq!(gdb.read_reg("pc").unwrap(), 0);
    let cpsr = gdb.read_reg("cpsr").unwrap();
    assert_eq!(cpsr & 0xc, 0x4, "starts at EL1, cpsr {cpsr:#x}");
    assert_eq!(gdb.threads().unwrap(), [1]);

    gdb.write_mem(
        RAM,
        &words(&[A64_NOP, A64_NOP, A64_NOP, A64_NOP, A64_B_SELF]),
    )
    .unwrap();
    assert_eq!(
        gdb.read_mem(RAM, 20).unwrap(),
        words(&[A64_NOP, A64_NOP, A64_NOP, A64_NOP, A64_B_SELF])
    );
    gdb.write_reg("pc", RAM).unwrap();
    for i in 1..=2 {
        assert!(gdb.step().unwrap().is_trap());
        assert_eq!(gdb.read_pc().unwrap(), RAM + 4 * i);
    }
    gdb.set_breakpoint(RAM + 16).unwrap();
    gdb.cont().unwrap();
    assert!(gdb.wait_stop(STOP_TIMEOUT).unwrap().is_trap());
    assert_eq!(gdb.read_reg("pc").unwrap(), RAM + 16);
    gdb.remove_breakpoint(RAM + 16).unwrap();

    gdb.write_regs(&[("x0", 0xfeed), ("x30", 7)]).unwrap();
    assert_eq!(
        gdb.read_regs(&["x0", "x30", "pc"]).unwrap(),
        [0xfeed, 7, RAM + 16]
    );
    kill(qemu, gdb);
}

/// Semihosting SYS_EXIT (x0 = 0x18, x1 → {ADP_Stopped_ApplicationExit, code}) from EL1.
fn aarch64_exit_with(code: u64, test: &str) -> Outcome {
    let (mut qemu, mut gdb) = start(Arch::Aarch64, test);
    let block = [0x20026u64, code];
    let block: Vec<u8> = block.iter().flat_map(|w| w.to_le_bytes()).collect();
    gdb.write_mem(RAM + 0x1000, &block).unwrap();
    gdb.write_mem(RAM, &words(&[A64_HLT_SEMIHOST, A64_B_SELF]))
        .unwrap();
    gdb.write_regs(&[("x0", 0x18), ("x1", RAM + 0x1000), ("pc", RAM)])
        .unwrap();
    gdb.cont().unwrap();
    // Semihosting exit tells the debugger first (W), then QEMU exits.
    match gdb.wait_stop(STOP_TIMEOUT) {
        Ok(stop) => assert_eq!(
            (stop.kind, u64::from(stop.signal)),
            (StopKind::Exited, code)
        ),
        Err(e) => panic!("expected a W stop reply: {e}"),
    }
    qemu.wait().unwrap().outcome
}

#[test]
fn aarch64_exit_codes_pass_and_fail() {
    assert_eq!(aarch64_exit_with(33, "a64-pass"), Outcome::Pass);
    assert_eq!(aarch64_exit_with(35, "a64-fail"), Outcome::Fail);
}

#[test]
fn timeout_kills_a_guest_that_never_exits() {
    // SeaBIOS with nothing to boot keeps running well past this timeout.
    let mut cfg = QemuConfig::new(Arch::X86_64, None);
    cfg.timeout = Duration::from_millis(700);
    let mut qemu = Qemu::spawn(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let pid = qemu.pid();
    let start = Instant::now();
    let result = qemu.wait().unwrap();
    assert_eq!(result.outcome, Outcome::TimedOut, "{}", result.summary());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(result
        .summary()
        .starts_with("QEMU x86_64 timed out after 0.7s"));
    assert!(process_gone(pid));
}

#[test]
fn drop_kills_qemu() {
    let mut cfg = QemuConfig::new(Arch::Aarch64, None);
    cfg.gdb_socket = Some(socket_path("drop"));
    let qemu = Qemu::spawn(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let pid = qemu.pid();
    assert!(!process_gone(pid));
    drop(qemu);
    assert!(process_gone(pid));
}

#[test]
fn qemu_errors_are_reported_in_one_line() {
    let mut cfg = QemuConfig::new(Arch::X86_64, None);
    cfg.extra_args = vec!["-no-such-option".into()];
    let mut qemu = Qemu::spawn(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let result = qemu.wait().unwrap();
    assert_eq!(result.outcome, Outcome::Unexpected(Exit::Code(1)));
    let line = result.summary();
    assert!(line.contains("no-such-option"), "{line}");
    assert!(!line.contains('\n'));
    // A missing image is an error before QEMU starts, not a hang.
    let cfg = QemuConfig::new(Arch::X86_64, Some("/nonexistent/image.elf".into()));
    assert!(Qemu::spawn(&cfg).is_err());
}

fn mean(total: Duration, n: u32) -> Duration {
    total / n
}

/// Not a benchmark harness, just the numbers the mock's design depends on (printed with
/// `--nocapture`), with bounds loose enough for a loaded CI machine.
#[test]
fn timing_of_round_trips_and_stop_cycles() {
    for arch in Arch::ALL {
        let (qemu, mut gdb) = start(arch, &format!("timing-{arch}"));
        let pc = match arch {
            Arch::X86_64 => "rip",
            Arch::Aarch64 => "pc",
        };
        const N: u32 = 2000;
        let t = Instant::now();
        for _ in 0..N {
            gdb.read_reg(pc).unwrap();
        }
        let read_reg = mean(t.elapsed(), N);

        let regs: Vec<&str> = match arch {
            Arch::X86_64 => vec!["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "rip"],
            Arch::Aarch64 => vec!["x0", "x1", "x2", "x3", "x4", "x5", "x6", "pc"],
        };
        let t = Instant::now();
        for _ in 0..N / 4 {
            gdb.read_regs(&regs).unwrap();
        }
        let read8_g = mean(t.elapsed(), N / 4);
        let t = Instant::now();
        for _ in 0..N / 4 {
            gdb.read_regs(&regs[..3]).unwrap();
        }
        let read3_p = mean(t.elapsed(), N / 4);

        // A guest spinning on itself; each cycle is cont → breakpoint stop.
        let (code, cs): (Vec<u8>, bool) = match arch {
            Arch::X86_64 => (vec![0x90, 0xeb, 0xfd], true), // nop; jmp -3
            Arch::Aarch64 => (words(&[A64_NOP, 0x17ff_ffff]), false), // nop; b -4
        };
        let base = match arch {
            Arch::X86_64 => 0x7c00,
            Arch::Aarch64 => RAM,
        };
        gdb.write_mem(base, &code).unwrap();
        if cs {
            gdb.write_reg("cs", 0).unwrap();
        }
        gdb.write_pc(base).unwrap();
        const STEPS: u32 = 300;
        let t = Instant::now();
        for _ in 0..STEPS {
            gdb.step().unwrap();
        }
        let step = mean(t.elapsed(), STEPS);
        gdb.set_breakpoint(base).unwrap();
        let t = Instant::now();
        for _ in 0..STEPS {
            gdb.cont().unwrap();
            let stop = gdb.wait_stop(STOP_TIMEOUT).unwrap();
            assert!(stop.is_trap());
        }
        let bp_cycle = mean(t.elapsed(), STEPS);
        assert_eq!(gdb.read_pc().unwrap(), base);
        eprintln!(
            "{arch}: read_reg {read_reg:.1?}, read_regs(8, g) {read8_g:.1?}, \
             read_regs(3, pipelined p) {read3_p:.1?}, step {step:.1?}, \
             cont→breakpoint {bp_cycle:.1?}"
        );
        assert!(read_reg < Duration::from_millis(5));
        assert!(step < Duration::from_millis(50));
        kill(qemu, gdb);
    }
}
