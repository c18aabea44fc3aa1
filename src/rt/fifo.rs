//! A first-in first-out queue that holds one item without allocating.
//!
//! Why: a session's outbox, its events for the application and the tasks
//! waiting on it are empty nearly always, and hold one item for a moment
//! when they are not (a message arrives and is handed on, an answer is
//! queued and written, a transport waits). A
//! `VecDeque` allocates room for four on its first push and keeps it for
//! the session's life: 128 bytes each for the two queues, 256 bytes for
//! every idle client. Here the one item lives inline; only a burst
//! allocates, and what it allocated is given back once the burst is gone.

use std::collections::VecDeque;

/// A FIFO queue whose first item is stored inline.
#[derive(Debug)]
pub(crate) struct Fifo<T> {
    /// The oldest item, when it is not in `rest`.
    first: Option<T>,
    /// Items behind `first`, in order; `None` when there are none, so an
    /// empty queue is `first` and one word, and owns no memory. (Boxed on
    /// purpose: a `VecDeque` inline is four words in every session.)
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<T>>>,
}

impl<T> Default for Fifo<T> {
    fn default() -> Fifo<T> {
        Fifo {
            first: None,
            rest: None,
        }
    }
}

impl<T> Fifo<T> {
    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }

    /// Adds `item` at the back.
    pub fn push_back(&mut self, item: T) {
        if self.is_empty() {
            self.first = Some(item);
        } else {
            self.rest.get_or_insert_default().push_back(item);
        }
    }

    /// Takes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        if let Some(item) = self.first.take() {
            return Some(item);
        }
        let rest = self.rest.as_mut()?;
        let item = rest.pop_front();
        if rest.is_empty() {
            // A burst is over: its room goes back.
            self.rest = None;
        }
        item
    }

    /// Takes every item, oldest first.
    pub fn take_all(&mut self) -> Vec<T> {
        std::mem::take(self).into_iter().collect()
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    /// Drops every item.
    pub fn clear(&mut self) {
        *self = Fifo::default();
    }
}

impl<T> IntoIterator for Fifo<T> {
    type Item = T;
    type IntoIter =
        std::iter::Chain<std::option::IntoIter<T>, std::collections::vec_deque::IntoIter<T>>;

    /// The items, oldest first.
    fn into_iter(self) -> Self::IntoIter {
        let rest = self.rest.map(|rest| *rest).unwrap_or_default();
        self.first.into_iter().chain(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_and_one_is_held_inline() {
        let mut fifo = Fifo::default();
        assert!(fifo.is_empty() && fifo.pop_front().is_none());
        fifo.push_back(1);
        assert!(fifo.rest.is_none(), "one item allocates nothing");
        assert_eq!(fifo.pop_front(), Some(1));
        for n in 2..6 {
            fifo.push_back(n);
        }
        assert_eq!(fifo.pop_front(), Some(2));
        fifo.push_back(6);
        assert_eq!(fifo.pop_front(), Some(3));
        fifo.push_back(7);
        let mut out = Vec::new();
        while let Some(n) = fifo.pop_front() {
            out.push(n);
        }
        assert_eq!(out, [4, 5, 6, 7]);
        assert!(fifo.is_empty());
        assert!(fifo.rest.is_none(), "the burst's room went back");
    }

    #[test]
    fn take_all_keeps_the_order() {
        let mut fifo = Fifo::default();
        for n in 0..5 {
            fifo.push_back(n);
        }
        assert_eq!(fifo.pop_front(), Some(0));
        fifo.push_back(5);
        assert_eq!(fifo.iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(fifo.take_all(), [1, 2, 3, 4, 5]);
        assert!(fifo.is_empty());
        fifo.push_back(9);
        fifo.push_back(10);
        assert_eq!(fifo.into_iter().collect::<Vec<_>>(), [9, 10]);
    }
}
