//! One shard's runtime state on its executor: the sans-IO core plus the
//! glue that turns its actions into socket wake-ups, mesh batches and SMS
//! jobs. Single-threaded: shared by the shard's tasks through `Rc<RefCell>`,
//! never across cores.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use tern_core::action::{Action, SmsJob};
use tern_core::conn::{ConnId, MigrationState};
use tern_core::mesh::MeshMsg;
use tern_core::shard::Shard;

use crate::clock::now_ms;
use crate::sms::{SmsGateway, SmsMessage};

/// What the runtime must do with a connection besides moving bytes.
#[derive(Debug, Default)]
pub(crate) struct ConnSlot {
    pub(crate) waker: Option<Waker>,
    /// Flush, then close.
    pub(crate) close: bool,
    /// Flush, then ship to another shard. Boxed: the slot lives as long as
    /// the connection and a move is a one-off at login, so the slot stays
    /// small (32 bytes instead of 88).
    pub(crate) migrate: Option<Box<(u16, MigrationState)>>,
}

impl ConnSlot {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) struct ShardRt {
    pub(crate) core: Shard,
    pub(crate) slots: HashMap<ConnId, ConnSlot>,
    /// Mesh messages waiting for the next batch, per destination shard.
    pub(crate) mesh_out: Vec<Vec<MeshMsg>>,
    /// Connections waiting to be shipped, per destination shard.
    pub(crate) adopt_out: Vec<Vec<super::mesh::Adopt>>,
    pub(crate) mesh_waker: Option<Waker>,
    pub(crate) stopping: bool,
    /// The shard's log; `None` only in tests of the runtime without disk.
    pub(crate) log: Option<super::log::ShardLog>,
    /// Where SMS failures are counted by reason.
    pub(crate) metrics: Option<Arc<crate::ops::metrics::Metrics>>,
}

pub(crate) type RtRef = Rc<RefCell<ShardRt>>;

impl ShardRt {
    pub(crate) fn new(core: Shard, shards: usize) -> Self {
        Self {
            core,
            slots: HashMap::new(),
            mesh_out: (0..shards).map(|_| Vec::new()).collect(),
            adopt_out: (0..shards).map(|_| Vec::new()).collect(),
            mesh_waker: None,
            stopping: false,
            log: None,
            metrics: None,
        }
    }

    pub(crate) fn slot(&mut self, conn: ConnId) -> &mut ConnSlot {
        self.slots.entry(conn).or_default()
    }

    fn wake_mesh(&mut self) {
        if let Some(w) = self.mesh_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn has_mesh_out(&self) -> bool {
        self.mesh_out.iter().any(|b| !b.is_empty()) || self.adopt_out.iter().any(|b| !b.is_empty())
    }
}

/// Turns every pending core action into runtime work. Call after each
/// call into the core.
pub(crate) fn drain_actions(rt: &RtRef, sms: &Arc<dyn SmsGateway>) {
    let mut jobs = Vec::new();
    {
        let mut r = rt.borrow_mut();
        while let Some(action) = r.core.poll_action() {
            match action {
                Action::Wake(conn) => r.slot(conn).wake(),
                Action::Close(conn) => {
                    let slot = r.slot(conn);
                    slot.close = true;
                    slot.wake();
                }
                Action::Migrate { conn, to, state } => {
                    let slot = r.slot(conn);
                    slot.migrate = Some(Box::new((to, state)));
                    slot.wake();
                }
                Action::Mesh { to, msg } => {
                    if let Some(batch) = r.mesh_out.get_mut(usize::from(to)) {
                        batch.push(msg);
                    }
                    r.wake_mesh();
                }
                Action::SendSms(job) => jobs.push(job),
                Action::Append { seq, record } => {
                    let r = &mut *r;
                    let result = match r.log.as_mut() {
                        Some(log) => log.append(seq, &record),
                        // Never report durability that did not happen.
                        None => Err("this shard has no log".to_string()),
                    };
                    match result {
                        Ok(lsn) => {
                            r.core.note_location(seq, lsn.to_u64());
                            if let Some(log) = r.log.as_ref() {
                                log.update_backpressure(&mut r.core);
                            }
                        }
                        Err(e) => {
                            if !r.core.is_poisoned() {
                                tracing::error!(error = %e, "SHARD POISONED: log append failed");
                            }
                            r.core.poison();
                        }
                    }
                }
                Action::Fetch { user, items } => match r.log.as_mut() {
                    Some(log) => log.fetch(user, items),
                    None => r.core.handle_fetch_failed(user),
                },
            }
        }
    }
    for job in jobs {
        spawn_sms(rt.clone(), sms.clone(), job);
    }
}

/// Runs the gateway call on glommio's blocking pool (an HTTP gateway may
/// take seconds) and reports the result to the core.
fn spawn_sms(rt: RtRef, sms: Arc<dyn SmsGateway>, job: SmsJob) {
    let id = job.job;
    let gateway = sms.clone();
    glommio::spawn_local(async move {
        let msg = SmsMessage {
            phone: job.phone,
            text: job.text,
            pin: job.pin,
        };
        let result = glommio::executor()
            .spawn_blocking(move || gateway.send_pin(&msg))
            .await;
        if let Err(e) = &result {
            tracing::warn!(gateway = sms.name(), error = %e, "SMS gateway failed");
            let r = rt.borrow();
            if let Some(m) = r.metrics.as_ref().and_then(|m| m.shard(r.core.shard())) {
                m.record_pin_failed(crate::ops::metrics::PinFailure::of(e));
            }
        }
        rt.borrow_mut()
            .core
            .handle_sms_result(id, result.is_ok(), now_ms());
        drain_actions(&rt, &sms);
    })
    .detach();
}
