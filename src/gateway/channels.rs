//! A session's channel names, as its record keeps them.
//!
//! Why not a `BTreeSet<String>`: its first leaf node is 280 B (288 B in
//! mimalloc) whatever the names, plus one allocation per name; a session
//! bound to one channel paid 304 B for it, a tenth of an idle session
//! (bench/README.md, "WebSocket gateway"). Here the names are one
//! exact-size boxed slice of boxed strings, sorted (lookups by binary
//! search): 16 B for the slice and the names' own bytes. Changes (the API's
//! PATCH) rebuild it; they are rare and sessions have few channels.

/// Sorted, deduplicated channel names in one exact-size allocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Channels(Box<[Box<str>]>);

impl Channels {
    /// Whether the session is in channel `c`.
    pub fn contains(&self, c: &str) -> bool {
        self.0.binary_search_by(|x| (**x).cmp(c)).is_ok()
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|c| &**c)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `add`, then removes `remove`.
    pub fn update(&mut self, add: impl IntoIterator<Item = String>, remove: &[String]) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.extend(add.into_iter().map(String::into_boxed_str));
        v.retain(|c| !remove.iter().any(|r| **r == **c));
        *self = Channels::from_vec(v);
    }

    fn from_vec(mut v: Vec<Box<str>>) -> Channels {
        v.sort_unstable();
        v.dedup();
        // `into_boxed_slice` drops the spare capacity.
        Channels(v.into_boxed_slice())
    }
}

impl FromIterator<String> for Channels {
    fn from_iter<I: IntoIterator<Item = String>>(it: I) -> Channels {
        Channels::from_vec(it.into_iter().map(String::into_boxed_str).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Channels) -> Vec<&str> {
        c.iter().collect()
    }

    #[test]
    fn sorted_deduplicated_and_updated() {
        let mut c: Channels = ["b", "a", "c", "a"].map(String::from).into_iter().collect();
        assert_eq!(names(&c), ["a", "b", "c"]);
        assert!(c.contains("b") && !c.contains("d") && !c.contains(""));
        c.update(
            ["d".to_string(), "a".to_string()],
            &["b".to_string(), "zz".to_string()],
        );
        assert_eq!(names(&c), ["a", "c", "d"]);
        c.update([], &["a".to_string(), "c".to_string(), "d".to_string()]);
        assert!(c.is_empty() && !c.contains("a"));
        assert_eq!(c, Channels::default());
    }

    #[test]
    fn one_channel_is_small() {
        // The record's field and its one allocation (the slice; the name's
        // bytes are a second, of the name's size).
        assert_eq!(std::mem::size_of::<Channels>(), 16);
        let c: Channels = std::iter::once("b".to_string()).collect();
        assert_eq!(c.0.len(), 1);
        assert_eq!(std::mem::size_of_val(&*c.0), 16);
    }
}
