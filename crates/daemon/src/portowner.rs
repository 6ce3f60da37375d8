//! Who holds a TCP port, for error messages ("held by pid 123 (nginx)").
//! Reads /proc/net/tcp{,6} for the listening socket's inode, then finds the
//! process with that socket among /proc/*/fd. Best effort: None when not
//! visible (another user's process, no /proc).

pub fn describe(port: u16) -> Option<String> {
    let inode = listening_inode(port)?;
    let target = format!("socket:[{inode}]");
    for ent in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(|s| s == target))
                .unwrap_or(false)
            {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

fn listening_inode(port: u16) -> Option<String> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "ADDR:PORT" in hex; state 0A is LISTEN.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let p = local.rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) && *state == "0A" {
                return Some(inode.to_string());
            }
        }
    }
    None
}
