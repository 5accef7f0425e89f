//! Network namespaces and veth pairs, through iproute2.

use std::net::Ipv4Addr;

use tokio::process::Command;

use super::AgentError;

async fn ip(args: &[&str]) -> Result<(), AgentError> {
    let out =
        Command::new("ip").args(args).output().await.map_err(|e| AgentError::Net(format!("ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(AgentError::Net(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A pod's namespace and host-side veth.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

/// Creates `netns` with `eth0` at `ip/prefix` on `bridge`, default route via `gateway`.
pub async fn create(
    prefix: &str,
    n: u32,
    bridge: &str,
    ip_addr: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> Result<PodNet, AgentError> {
    let netns = format!("{prefix}{n}");
    let host_veth = format!("{prefix}h{n}");
    let peer = format!("{prefix}p{n}");
    if host_veth.len() > 15 {
        return Err(AgentError::Net(format!("interface name {host_veth} is over 15 characters")));
    }
    let addr = format!("{ip_addr}/{prefix_len}");
    let gw = gateway.to_string();
    ip(&["netns", "add", &netns]).await?;
    let steps: [&[&str]; 9] = [
        &["link", "add", &host_veth, "type", "veth", "peer", "name", &peer],
        &["link", "set", &peer, "netns", &netns],
        &["link", "set", &host_veth, "master", bridge, "up"],
        &["-n", &netns, "link", "set", "lo", "up"],
        &["-n", &netns, "link", "set", &peer, "name", "eth0"],
        &["-n", &netns, "addr", "add", &addr, "dev", "eth0"],
        &["-n", &netns, "link", "set", "eth0", "up"],
        &["-n", &netns, "route", "add", "default", "via", &gw],
        &["-n", &netns, "link", "show", "eth0"],
    ];
    for args in steps {
        if let Err(e) = ip(args).await {
            remove(&PodNet { netns: netns.clone(), host_veth: host_veth.clone(), ip: ip_addr }).await;
            return Err(e);
        }
    }
    Ok(PodNet { netns, host_veth, ip: ip_addr })
}

pub async fn remove(net: &PodNet) {
    let _ = ip(&["link", "del", &net.host_veth]).await;
    let _ = ip(&["netns", "del", &net.netns]).await;
}

/// Removes every namespace and host veth whose name starts with `prefix` (leftovers of a
/// previous run).
pub async fn cleanup_prefix(prefix: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output().await {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.split_whitespace().next()
                && name.starts_with(prefix)
            {
                let _ = ip(&["netns", "del", name]).await;
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output().await {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name =
                line.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or_default().to_string());
            if let Some(name) = name
                && name.starts_with(&format!("{prefix}h"))
            {
                let _ = ip(&["link", "del", &name]).await;
            }
        }
    }
}
