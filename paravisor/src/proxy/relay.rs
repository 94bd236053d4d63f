//! The relay table: which VTL0 SynIC connections and devices the paravisor relays to the host.
//!
//! Hyper-V serves VTL0's PostMessage and SignalEvent itself when the host knows the connection,
//! and its RetargetDeviceInterrupt when it knows the device. Only calls naming a connection or
//! device the hypervisor does not know reach VTL2 (the UnknownSynicConnection and
//! RetargetInterruptWithUnknownDeviceId intercepts; fact sheet §2.1, §2.3). Each such call is
//! relayed only if this table names its id; anything else gets the status the hypervisor would
//! have given without a paravisor (INVALID_CONNECTION_ID / INVALID_DEVICE_ID). The paravisor
//! issues relayed calls as VTL2, so the table is what keeps VTL0 away from host ports only VTL2
//! may use: VTL0 reaches exactly the host connections the table maps to, and nothing else.
//!
//! Configured on the command line (`pv.relay=0x10:1,0x11:2`: VTL0 connection id `:` host
//! connection id; `pv.devices=0x1234,5`: device ids VTL0 owns, relayed unchanged). The default is
//! empty: VTL0 sees exactly what the hypervisor alone would tell it.

/// The most entries of each kind (a partition has a handful of VMBus connections).
pub const RELAY_MAX: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayTable {
    connections: [(u32, u32); RELAY_MAX],
    connection_count: usize,
    devices: [u64; RELAY_MAX],
    device_count: usize,
}

/// Why a `pv.relay` / `pv.devices` value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// Not `id:id` / `id`, or a number that does not parse.
    Syntax,
    /// More than [`RELAY_MAX`] entries.
    TooMany,
    /// The same VTL0 id twice (two meanings for one id).
    Duplicate,
}

impl RelayTable {
    pub const EMPTY: RelayTable = RelayTable {
        connections: [(0, 0); RELAY_MAX],
        connection_count: 0,
        devices: [0; RELAY_MAX],
        device_count: 0,
    };

    /// The host connection VTL0's `connection` is relayed to.
    pub fn host_connection(&self, connection: u32) -> Option<u32> {
        self.connections[..self.connection_count]
            .iter()
            .find(|(vtl0, _)| *vtl0 == connection)
            .map(|&(_, host)| host)
    }

    /// Whether VTL0 owns `device` (its RetargetDeviceInterrupt calls are relayed).
    pub fn owns_device(&self, device: u64) -> bool {
        self.devices[..self.device_count].contains(&device)
    }

    pub fn connections(&self) -> &[(u32, u32)] {
        &self.connections[..self.connection_count]
    }

    pub fn devices(&self) -> &[u64] {
        &self.devices[..self.device_count]
    }

    /// Parses `pv.relay`'s value: comma-separated `vtl0:host` pairs (decimal or `0x` hex).
    pub fn with_connections(mut self, value: &str) -> Result<RelayTable, RelayError> {
        for entry in value.split(',').filter(|e| !e.is_empty()) {
            let (vtl0, host) = entry.split_once(':').ok_or(RelayError::Syntax)?;
            let (vtl0, host) = (number(vtl0)?, number(host)?);
            let (vtl0, host) = (
                u32::try_from(vtl0).map_err(|_| RelayError::Syntax)?,
                u32::try_from(host).map_err(|_| RelayError::Syntax)?,
            );
            if self.host_connection(vtl0).is_some() {
                return Err(RelayError::Duplicate);
            }
            push(
                &mut self.connections,
                &mut self.connection_count,
                (vtl0, host),
            )?;
        }
        Ok(self)
    }

    /// Parses `pv.devices`'s value: comma-separated device ids.
    pub fn with_devices(mut self, value: &str) -> Result<RelayTable, RelayError> {
        for entry in value.split(',').filter(|e| !e.is_empty()) {
            let device = number(entry)?;
            if self.owns_device(device) {
                return Err(RelayError::Duplicate);
            }
            push(&mut self.devices, &mut self.device_count, device)?;
        }
        Ok(self)
    }
}

/// Appends `value` after the `count` used slots, or TooMany.
fn push<T>(slots: &mut [T], count: &mut usize, value: T) -> Result<(), RelayError> {
    *slots.get_mut(*count).ok_or(RelayError::TooMany)? = value;
    *count += 1;
    Ok(())
}

fn number(s: &str) -> Result<u64, RelayError> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| RelayError::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_and_refuses() {
        let t = RelayTable::EMPTY
            .with_connections("0x10:1,17:0x2")
            .unwrap()
            .with_devices("0x1234,5")
            .unwrap();
        assert_eq!(t.host_connection(0x10), Some(1));
        assert_eq!(t.host_connection(0x11), Some(2));
        assert_eq!(t.host_connection(1), None, "host ids are not VTL0 ids");
        assert!(t.owns_device(0x1234) && t.owns_device(5) && !t.owns_device(6));
        assert_eq!(t.connections(), &[(0x10, 1), (0x11, 2)]);
        let e = RelayTable::EMPTY;
        assert_eq!(e.with_connections("1"), Err(RelayError::Syntax));
        assert_eq!(e.with_connections("1:x"), Err(RelayError::Syntax));
        assert_eq!(e.with_connections("1:0x100000000"), Err(RelayError::Syntax));
        assert_eq!(e.with_connections("1:2,1:3"), Err(RelayError::Duplicate));
        assert_eq!(e.with_devices("7,7"), Err(RelayError::Duplicate));
        let many: std::string::String = (0..=RELAY_MAX).map(|i| format!("{i}:1,")).collect();
        assert_eq!(e.with_connections(&many), Err(RelayError::TooMany));
        assert_eq!(e.with_connections(""), Ok(RelayTable::EMPTY));
    }
}
