//! The reconciler's side of weft's devices: binding the entries a backend planned on a device to
//! the device's real ifindex, making a device (and reading back what the kernel made), and
//! following link notifications, which are re-read before they are trusted (a notification can
//! be a late echo of weft's own write).
use std::collections::BTreeMap;
use std::net::IpAddr;

use tracing::{debug, info, warn};

use super::Reconciler;
use crate::BackendError;
use crate::device;
use crate::plan::{self, Addr};

impl Reconciler {
    /// The ifindex of weft's device `name` as far as the reconciler knows (after an apply: the
    /// device it made or found). Planners take it for their next plan.
    pub fn device_index(&self, name: &str) -> Option<u32> {
        self.cache.devices.get(name).map(|d| d.index)
    }

    /// Whether `index` is one of weft's devices (its permanent ARP/FDB entries are weft's).
    pub(super) fn owns_index(&self, index: u32) -> bool {
        self.cache.devices.values().any(|d| d.index == index)
    }

    /// Moves the desired entries planned on a device's planned index to the index the device
    /// has in the kernel (a device made anew, or found under another index).
    pub(super) fn bind_devices(&mut self) {
        let moves: Vec<(String, u32, u32)> = self
            .last_desired
            .devices
            .iter()
            .filter_map(|(name, want)| {
                let real = self.cache.devices.get(name)?.index;
                (real != want.index).then(|| (name.clone(), want.index, real))
            })
            .collect();
        for (name, from, to) in moves {
            // Two devices planned on one index (both unknown): which entries are whose is not
            // known; they wait for the planner's next plan.
            let shared = self
                .last_desired
                .devices
                .values()
                .filter(|d| d.index == from)
                .count()
                > 1;
            if !shared {
                debug!(device = %name, from, to, "entries planned on another index of the device");
                self.last_desired.move_entries(from, to);
            }
            if let Some(d) = self.last_desired.devices.get_mut(&name) {
                d.index = to;
            }
        }
    }

    /// `accept_ra = 0` on the wanted devices that ask for it ([`Device::wants_accept_ra_off`])
    /// and are in the kernel, once per ifindex (a device made again has a new one). A device
    /// that holds 0 already is left alone; a failure is a warning only, as flanneld ignores it.
    ///
    /// [`Device::wants_accept_ra_off`]: crate::device::Device::wants_accept_ra_off
    pub(super) fn tune_devices(&mut self) {
        for want in self.last_desired.devices.values() {
            if !want.wants_accept_ra_off() {
                continue;
            }
            let Some(have) = self.cache.devices.get(&want.name) else {
                continue;
            };
            if !self.ra_off.insert(have.index) {
                continue;
            }
            let cmd = device::accept_ra_off_command(&want.name);
            match device::accept_ra_off(&want.name) {
                Ok(true) => info!("{cmd}"),
                Ok(false) => debug!(device = %want.name, "accept_ra is 0 already"),
                // A kernel without IPv6 (`ipv6.disable=1`) has no such sysctl: nothing to turn off.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    debug!(device = %want.name, "no IPv6 sysctls ({e}); accept_ra not set")
                }
                Err(e) => warn!("{cmd} failed: {e}; router advertisements stay accepted"),
            }
        }
    }

    /// The wanted devices the kernel lacks (their planned index → name).
    pub(super) fn missing_devices(&self) -> BTreeMap<u32, String> {
        self.last_desired
            .devices
            .values()
            .filter(|d| !self.cache.devices.contains_key(&d.name))
            .map(|d| (d.index, d.name.clone()))
            .collect()
    }

    /// True when every wanted device is in the kernel as wanted, with its addresses, and on the
    /// planned index.
    pub(super) fn devices_in_sync(&self) -> bool {
        plan::diff_devices(&self.last_desired, &self.cache).is_empty()
            && self
                .last_desired
                .devices
                .values()
                .all(|d| self.cache.devices.get(&d.name).map(|c| c.index) == Some(d.index))
    }

    /// `ip link add <device>`, then reads it back (its ifindex, and the MAC the kernel chose
    /// when none is wanted) into the cache.
    pub(super) async fn add_device(&mut self, d: &plan::Device) -> Result<(), BackendError> {
        self.nl.device_add(d).await?;
        let made = self.nl.device_by_name(&d.name).await?.ok_or_else(|| {
            BackendError::Unsupported(format!("{} vanished right after creation", d.name))
        })?;
        self.names.insert(made.index, made.name.clone());
        self.links_down.remove(&made.index);
        self.cache.add_device(made);
        Ok(())
    }

    /// The link at `index` is gone (weft deleted it): the nexthops through it went with it, and
    /// the routes on them or through it, without notifications.
    pub(super) fn forget_link(&mut self, index: u32) {
        for id in self.nh.ids_via(index) {
            for dst in self.nh.removed(id, false) {
                self.cache.routes.remove(&dst);
                self.misfits.remove(&dst);
            }
        }
        let gone: Vec<ipnet::IpNet> = self
            .cache
            .routes
            .values()
            .filter(|r| r.oif == index)
            .map(|r| r.dst)
            .collect();
        for dst in gone {
            self.cache.routes.remove(&dst);
            self.nh.set_route(dst, None);
            self.misfits.remove(&dst);
        }
        self.links_down.remove(&index);
        self.ra_off.remove(&index);
    }

    /// A notified weft-named link. A notification can be a late echo of weft's own writes (a
    /// new device is announced down, then up), so it is not taken as the device's state: a
    /// device that looks other than cached is re-read before the next diff. True when it does.
    pub(super) fn device_seen(&mut self, dev: &plan::Device) -> bool {
        if self.cache.devices.get(&dev.name) == Some(dev) {
            return false;
        }
        self.stale_devices.insert(dev.name.clone());
        true
    }

    /// Re-reads the devices notifications showed changed (`ip -d link show <name>`) into the
    /// cache, and says how each differs from the wanted one.
    pub(super) async fn reread_devices(&mut self) -> Result<(), BackendError> {
        for name in std::mem::take(&mut self.stale_devices) {
            let now = match self.nl.device_by_name(&name).await {
                Ok(now) => now,
                Err(e) => {
                    self.stale_devices.insert(name);
                    return Err(e);
                }
            };
            let known = self.cache.devices.get(&name).map(|d| d.index);
            let wanted = self.last_desired.devices.contains_key(&name);
            if known.is_none() && !self.owner.owns_device(wanted, []) {
                // Another network's device, or one that is not ours yet (an address of this
                // network makes it ours at the next dump).
                debug!(device = %name, "a weft-named device of another network; left alone");
                continue;
            }
            if let Some(old) = known {
                if now.as_ref().map(|d| d.index) != Some(old) {
                    self.forget_link(old);
                    self.cache.forget_device(&name, old);
                }
            }
            let Some(now) = now else { continue };
            match self.last_desired.devices.get(&name) {
                Some(want) => {
                    let d = want.differences(&now);
                    if !d.is_empty() {
                        warn!(
                            "{name} was changed by someone else: {}; repairing it",
                            d.all().join(", ")
                        );
                    }
                }
                None => debug!(device = %name, "a device with a weft name that no backend wants"),
            }
            if !now.up {
                self.links_down.insert(now.index);
            }
            self.names.insert(now.index, name);
            self.cache.add_device(now);
        }
        Ok(())
    }

    /// The address as weft's when `index` is one of weft's devices.
    pub(super) fn owned_addr(
        &self,
        index: u32,
        addr: impl Into<IpAddr>,
        prefix_len: u8,
    ) -> Option<Addr> {
        let dev = self.cache.device_at(index)?;
        Some(Addr {
            dev: dev.name.clone(),
            addr: ipnet::IpNet::new(addr.into(), prefix_len).ok()?,
        })
    }
}
