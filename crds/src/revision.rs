//! A Rollout's revision: a stable hash of its pod template, carried by the label
//! `rollgate.dev/revision` on the Deployments and pods made from it, and in status.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// FNV-1a over the template's JSON, 40 bits as 10 hex digits.
pub fn revision_of(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}
