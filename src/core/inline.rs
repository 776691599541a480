//! A short sequence kept inline: up to `N` items inside the value itself,
//! on the heap beyond. The window stage makes several small sequences per
//! application (a group's text, an event's values, an answer's features);
//! inline, they cost no allocation, and reading them touches no memory
//! other than the value's own — which matters more than instructions on a
//! path whose data waits an epoch before it is read again.
//!
//! Invariant: **a sequence of at most `N` items is always inline** (every
//! constructor and [`InlineVec::push`] keep it so), and unused inline slots
//! hold `T::default()`; so two equal sequences have one representation, and
//! equality, order and hashing may compare slices ([`InlineVec::as_slice`]).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Up to `N` items of `T` inline, more on the heap (module invariant).
#[derive(Clone, Debug)]
pub enum InlineVec<T, const N: usize> {
    /// `len` items, the rest of `items` at their default.
    Inline {
        /// How many of `items` are in use.
        len: u8,
        /// The items, then defaults.
        items: [T; N],
    },
    /// More than `N` items (boxed: the heap case is rare, and a box keeps
    /// the value small).
    Heap(Box<[T]>),
}

impl<T: Copy + Default, const N: usize> InlineVec<T, N> {
    /// The empty sequence.
    pub fn new() -> Self {
        const { assert!(N < 256, "an inline length is a u8") };
        InlineVec::Inline {
            len: 0,
            items: [T::default(); N],
        }
    }

    /// A copy of `items`.
    pub fn from_slice(items: &[T]) -> Self {
        if items.len() <= N {
            let mut inline = [T::default(); N];
            inline[..items.len()].copy_from_slice(items);
            InlineVec::Inline {
                len: items.len() as u8,
                items: inline,
            }
        } else {
            InlineVec::Heap(items.into())
        }
    }

    /// Appends `item` (onto the heap once `N` are inline; there, each push
    /// copies the items: build long sequences with `collect`).
    pub fn push(&mut self, item: T) {
        match self {
            InlineVec::Inline { len, items } if (*len as usize) < N => {
                items[*len as usize] = item;
                *len += 1;
            }
            InlineVec::Inline { items, .. } => {
                let mut heap = items.to_vec();
                heap.push(item);
                *self = InlineVec::Heap(heap.into());
            }
            InlineVec::Heap(heap) => {
                let mut items = std::mem::take(heap).into_vec();
                items.push(item);
                *heap = items.into();
            }
        }
    }
}

impl<T, const N: usize> InlineVec<T, N> {
    /// The items.
    pub fn as_slice(&self) -> &[T] {
        match self {
            InlineVec::Inline { len, items } => &items[..*len as usize],
            InlineVec::Heap(heap) => heap,
        }
    }
}

impl<T: Copy + Default, const N: usize> Default for InlineVec<T, N> {
    fn default() -> Self {
        InlineVec::new()
    }
}

impl<T, const N: usize> std::ops::Deref for InlineVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default, const N: usize> FromIterator<T> for InlineVec<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        let mut v = InlineVec::new();
        while let Some(item) = iter.next() {
            if v.len() == N {
                let mut heap = v.to_vec();
                heap.push(item);
                heap.extend(iter);
                return InlineVec::Heap(heap.into());
            }
            v.push(item);
        }
        v
    }
}

// Equality, order and hashing by the items alone (module invariant).
impl<T: PartialEq, const N: usize> PartialEq for InlineVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Eq, const N: usize> Eq for InlineVec<T, N> {}

impl<T: PartialOrd, const N: usize> PartialOrd for InlineVec<T, N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.as_slice().partial_cmp(other.as_slice())
    }
}

impl<T: Ord, const N: usize> Ord for InlineVec<T, N> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl<T: Hash, const N: usize> Hash for InlineVec<T, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl<T: Serialize, const N: usize> Serialize for InlineVec<T, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de> + Copy + Default, const N: usize> Deserialize<'de>
    for InlineVec<T, N>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(|items| InlineVec::from_slice(&items))
    }
}

/// A short text kept inline: a group's key, usually a state or a grade.
pub type InlineText = InlineVec<u8, 22>;

impl InlineText {
    /// The text of `s`.
    pub fn of(s: &str) -> InlineText {
        InlineVec::from_slice(s.as_bytes())
    }

    /// The text (made only from `&str`s, so valid UTF-8; lossy otherwise,
    /// for a text deserialized from elsewhere).
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sequences_stay_inline_and_long_ones_spill_with_one_order() {
        let mut v: InlineVec<i64, 3> = InlineVec::new();
        for i in 0..3 {
            v.push(i);
            assert!(matches!(v, InlineVec::Inline { .. }));
        }
        v.push(3);
        assert!(matches!(v, InlineVec::Heap(_)));
        assert_eq!(v.as_slice(), &[0, 1, 2, 3]);
        // Built either way, equal items are equal, ordered and hashed alike.
        let inline: InlineVec<i64, 3> = InlineVec::from_slice(&[1, 2]);
        let pushed: InlineVec<i64, 3> = [1, 2].into_iter().collect();
        assert_eq!(inline, pushed);
        let hash = |v: &InlineVec<i64, 3>| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&inline), hash(&pushed));
        // Order is the slices' order, across representations.
        let long: InlineVec<i64, 3> = InlineVec::from_slice(&[1, 2, 0, 0]);
        assert!(inline < long && long < InlineVec::from_slice(&[1, 3]));
        assert!(InlineVec::<i64, 3>::new() < inline);
    }

    #[test]
    fn texts_round_trip_through_serde_at_every_length() {
        for len in [0, 1, 2, 21, 22, 23, 40] {
            let s: String = "ab\u{1f}é".chars().cycle().take(len).collect();
            let t = InlineText::of(&s);
            assert_eq!(t.to_text(), s);
            assert_eq!(matches!(t, InlineVec::Inline { .. }), s.len() <= 22);
            let json = serde_json::to_string(&t).unwrap();
            let back: InlineText = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t);
            assert_eq!(
                matches!(back, InlineVec::Inline { .. }),
                matches!(t, InlineVec::Inline { .. })
            );
        }
    }
}
