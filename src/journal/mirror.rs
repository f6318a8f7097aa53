//! The outbox in memory: what the reporter reads instead of querying the
//! file for every batch. The writer thread keeps it, applying each committed
//! write's effect on the outbox right after the commit and before it answers,
//! so it never shows a result that is not durable, and never misses one that
//! is. When it cannot know (a failed commit, a requeue, too many results
//! waiting), it forgets, and the outbox is read from the file until the
//! writer loads it again.
//!
//! It must hold exactly the file's outbox whenever it is [`State::Known`],
//! and stay bounded (items and bytes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::OutboxItem;

/// Most results kept in memory. Past it (the control plane is away and
/// results pile up), the outbox is read from the file.
pub(crate) const MAX_ITEMS: usize = 4096;
/// Most bytes of results (as stored) kept in memory.
pub(crate) const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct Mirror {
    state: Mutex<State>,
    /// Limits (the constants, smaller in tests).
    max_items: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
enum State {
    /// Not known: read the file.
    #[default]
    Unknown,
    /// A load is queued on the writer; writes before it are in what it reads.
    Loading,
    Known(Items),
}

#[derive(Debug, Default)]
struct Items {
    by_seq: BTreeMap<i64, (OutboxItem, usize)>,
    seq_of: HashMap<String, i64>,
    bytes: usize,
}

impl Mirror {
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_items,
            max_bytes,
        }
    }

    pub(crate) fn max_items(&self) -> usize {
        self.max_items
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first `limit` results, when known.
    pub(crate) fn first(&self, limit: usize) -> Option<Vec<OutboxItem>> {
        match &*self.lock() {
            State::Known(items) => Some(
                items
                    .by_seq
                    .values()
                    .take(limit)
                    .map(|(item, _)| item.clone())
                    .collect(),
            ),
            State::Unknown | State::Loading => None,
        }
    }

    /// Whether the outbox is known (read from memory).
    #[cfg(test)]
    pub(crate) fn is_known(&self) -> bool {
        matches!(*self.lock(), State::Known(_))
    }

    /// Whether a load should be queued now (and marks it queued).
    pub(crate) fn wants_load(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Unknown => {
                *state = State::Loading;
                true
            }
            State::Loading | State::Known(_) => false,
        }
    }

    /// A queued load could not be sent: unknown again.
    pub(crate) fn load_not_sent(&self) {
        let mut state = self.lock();
        if matches!(*state, State::Loading) {
            *state = State::Unknown;
        }
    }

    /// The writer read the whole outbox (`None`: it holds more than fits).
    pub(crate) fn loaded(&self, items: Option<Vec<(OutboxItem, usize)>>) {
        let mut state = self.lock();
        *state = State::Unknown;
        let Some(list) = items else { return };
        if list.len() > self.max_items {
            return;
        }
        let mut known = Items::default();
        for (item, bytes) in list {
            known.bytes += bytes;
            known
                .seq_of
                .insert(item.result.action_id.clone(), item.completed_seq);
            known.by_seq.insert(item.completed_seq, (item, bytes));
        }
        if known.bytes <= self.max_bytes {
            *state = State::Known(known);
        }
    }

    /// The writer could not tell what the file holds now.
    pub(crate) fn forget(&self) {
        *self.lock() = State::Unknown;
    }

    /// A committed completion entered the outbox (`bytes`: its stored size).
    pub(crate) fn completed(&self, item: OutboxItem, bytes: usize) {
        let mut state = self.lock();
        let State::Known(items) = &mut *state else {
            return;
        };
        if items.by_seq.len() >= self.max_items || items.bytes + bytes > self.max_bytes {
            *state = State::Unknown;
            return;
        }
        items.bytes += bytes;
        items
            .seq_of
            .insert(item.result.action_id.clone(), item.completed_seq);
        items.by_seq.insert(item.completed_seq, (item, bytes));
    }

    /// Committed: these left the outbox.
    pub(crate) fn reported(&self, ids: &[String]) {
        let mut state = self.lock();
        let State::Known(items) = &mut *state else {
            return;
        };
        for id in ids {
            if let Some(seq) = items.seq_of.remove(id)
                && let Some((_, bytes)) = items.by_seq.remove(&seq)
            {
                items.bytes -= bytes;
            }
        }
    }

    /// Committed: a redelivered lease gave `id` a new token.
    pub(crate) fn new_lease_token(&self, id: &str, token: &str) {
        let mut state = self.lock();
        let State::Known(items) = &mut *state else {
            return;
        };
        if let Some(seq) = items.seq_of.get(id)
            && let Some((item, _)) = items.by_seq.get_mut(seq)
        {
            item.lease_token = Some(token.to_owned());
        }
    }
}
