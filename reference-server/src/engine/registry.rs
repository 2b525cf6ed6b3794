//! The servable versions being served, looked up by name and version.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::servable::ServableVersion;

/// Servable versions by name, then version.
#[derive(Debug, Default)]
pub struct Registry {
    servables: RwLock<BTreeMap<String, BTreeMap<u64, Arc<ServableVersion>>>>,
}

/// Why a lookup failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No servable of that name.
    NoServable,
    /// The servable exists but not that version.
    NoVersion,
}

impl Registry {
    /// Adds or replaces a servable version.
    pub fn insert(&self, sv: ServableVersion) {
        let mut map = self.servables.write().unwrap_or_else(|e| e.into_inner());
        map.entry(sv.name.clone())
            .or_default()
            .insert(sv.version, Arc::new(sv));
    }

    /// The version `version` of servable `name`; 0 means the newest.
    pub fn get(&self, name: &str, version: u64) -> Result<Arc<ServableVersion>, Lookup> {
        let map = self.servables.read().unwrap_or_else(|e| e.into_inner());
        let versions = map.get(name).ok_or(Lookup::NoServable)?;
        let found = if version == 0 {
            versions.values().next_back()
        } else {
            versions.get(&version)
        };
        found.cloned().ok_or(Lookup::NoVersion)
    }

    /// Removes a servable version; requests already holding it finish on it.
    pub fn remove(&self, name: &str, version: u64) -> Option<Arc<ServableVersion>> {
        let mut map = self.servables.write().unwrap_or_else(|e| e.into_inner());
        let versions = map.get_mut(name)?;
        let removed = versions.remove(&version);
        if versions.is_empty() {
            map.remove(name);
        }
        removed
    }

    /// The loaded versions of a servable, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        let map = self.servables.read().unwrap_or_else(|e| e.into_inner());
        map.get(name)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every loaded servable version.
    pub fn all(&self) -> Vec<Arc<ServableVersion>> {
        let map = self.servables.read().unwrap_or_else(|e| e.into_inner());
        map.values().flat_map(|v| v.values().cloned()).collect()
    }

    /// Every servable name with its versions, ascending.
    pub fn list(&self) -> Vec<(String, Vec<u64>)> {
        let map = self.servables.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(name, versions)| (name.clone(), versions.keys().copied().collect()))
            .collect()
    }

    /// Removes every version; returns them.
    pub fn clear(&self) -> Vec<Arc<ServableVersion>> {
        let all = self.all();
        for sv in &all {
            self.remove(&sv.name, sv.version);
        }
        all
    }

    /// Whether no version is loaded.
    pub fn is_empty(&self) -> bool {
        self.servables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}
