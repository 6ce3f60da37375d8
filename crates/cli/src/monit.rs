//! `pm2 monit`: a plain refreshing view (process table plus the selected
//! process's metadata and last log lines). pm2's blessed dashboard is not
//! reproduced; `q`, Esc or Ctrl-C exit 0.

use crate::commands::{terminal_columns, Cli, Code};
use crate::output;
use crate::render::table::{render_list, ListOptions};
use crate::timefmt::now_ms;
use anyhow::Result;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Puts the terminal in non-canonical, no-echo mode; restores it on drop.
struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: tcgetattr/tcsetattr on stdin with structs we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode { saved: None };
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode { saved: Some(saved) }
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
        print!("\x1b[?25h");
        let _ = std::io::stdout().flush();
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn monit(cli: &mut Cli) -> Result<Code> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(1) } != 1 {
        output::error("pm2 monit needs a terminal");
        return Ok(1);
    }
    // SAFETY: the handler only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    let _raw = RawMode::enter();
    let mut selected = 0usize;
    let mut last = Instant::now() - Duration::from_secs(10);
    loop {
        let mut buf = [0u8; 8];
        let n = std::io::stdin().read(&mut buf).unwrap_or(0);
        let keys = &buf[..n];
        if STOP.load(std::sync::atomic::Ordering::Relaxed) || keys.contains(&b'q') || keys == [27] {
            break;
        }
        let mut redraw = false;
        if keys.ends_with(b"\x1b[A") {
            selected = selected.saturating_sub(1);
            redraw = true;
        } else if keys.ends_with(b"\x1b[B") {
            selected += 1;
            redraw = true;
        }
        if redraw || last.elapsed() >= Duration::from_millis(800) {
            last = Instant::now();
            let mut procs = cli.list()?;
            crate::render::table::sort_procs(&mut procs, None);
            if !procs.is_empty() {
                selected = selected.min(procs.len() - 1);
            }
            let mut screen = String::from("\x1b[?25l\x1b[H\x1b[2J");
            let opts = ListOptions {
                now_ms: now_ms(),
                columns: terminal_columns(),
                sort: None,
                color: output::color_out(),
            };
            screen.push_str(&render_list(&procs, &opts).replace('\n', "\r\n"));
            screen.push_str("\r\n");
            if let Some(p) = procs.get(selected) {
                screen.push_str(&format!(
                    "\r\n [{}] {}  ns:{}  status:{}  restarts:{}  cpu:{}%  mem:{}\r\n script: {} {}\r\n",
                    p.pm_id,
                    p.app.name,
                    p.app.namespace,
                    p.status,
                    p.restart_time,
                    p.cpu,
                    crate::render::bytes_to_size(p.memory),
                    p.app.script,
                    p.app.args.join(" ")
                ));
                // Custom metrics the app declared with @pm2/io.
                if let Some(axm) = p.current_axm().filter(|a| !a.monitor.is_empty()) {
                    screen.push_str(" metrics:");
                    for (k, m) in &axm.monitor {
                        let v = m.get("value").unwrap_or(m);
                        let v = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                        let unit = m.get("unit").and_then(|u| u.as_str()).unwrap_or("");
                        screen
                            .push_str(&format!("  {k}: {v}{}{unit}", if unit.is_empty() { "" } else { " " }));
                    }
                    screen.push_str("\r\n");
                }
                for path in [&p.pm_out_log_path, &p.pm_err_log_path] {
                    for l in crate::logs::tail_lines(std::path::Path::new(path), 5) {
                        screen.push_str(&format!(" | {l}\r\n"));
                    }
                }
            }
            screen.push_str("\r\n up/down: select process   q/Esc/Ctrl-C: quit\r\n");
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(screen.as_bytes());
            let _ = o.flush();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    print!("\x1b[2J\x1b[H");
    Ok(0)
}
