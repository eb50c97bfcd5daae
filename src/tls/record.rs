//! One round of rustls's unbuffered state machine, for either side of a
//! connection: the server side of client connections (termination) and the
//! client side of upstream connections (origination, [`super::client`]).
//! rustls gives the two sides different connection types whose states share
//! one generic shape; this file handles that shape once.

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};

use super::session::{Sink, Step, Want};

/// The rustls connection of a [`super::TlsConn`].
pub enum Side {
    Server(UnbufferedServerConnection),
    Client(rustls::client::UnbufferedClientConnection),
}

impl Side {
    pub fn common(&self) -> &rustls::CommonState {
        match self {
            Side::Server(c) => c,
            Side::Client(c) => c,
        }
    }
}

/// The parts of a [`super::TlsConn`] one round writes to (borrowed beside
/// the connection and its incoming buffer, which rustls holds meanwhile).
pub(super) struct Records<'a> {
    pub out: &'a mut Vec<u8>,
    pub out_end: &'a mut usize,
    pub plain: &'a mut Vec<u8>,
    pub plain_pos: &'a mut usize,
    pub peer_closed: &'a mut bool,
    /// Bytes that went into the sink so far in this `process` call.
    pub got: &'a mut usize,
}

fn general(e: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::General(e.to_string())
}

impl Records<'_> {
    /// Handles one state; returns the bytes of the incoming buffer rustls is
    /// done with, the step reached (`None`: go round again) and an error.
    pub(super) fn on<Data>(
        &mut self,
        state: Result<ConnectionState<'_, '_, Data>, rustls::Error>,
        mut discard: usize,
        sink: &mut Sink<'_, '_>,
        want: Want<'_>,
    ) -> (usize, Option<Step>, Option<rustls::Error>) {
        let got = *self.got;
        let mut fail = None;
        let step = match state {
            Err(e) => {
                fail = Some(e);
                None
            }
            Ok(ConnectionState::ReadTraffic(mut rt)) => {
                while let Some(rec) = rt.next_record() {
                    match rec {
                        Ok(r) => {
                            discard += r.discard;
                            let p: &[u8] = r.payload;
                            let kept = match sink {
                                Sink::Into(dst, max) => {
                                    let n = p.len().min(max.saturating_sub(*self.got));
                                    dst.extend_from_slice(&p[..n]);
                                    *self.got += n;
                                    &p[n..]
                                }
                                Sink::Read(rb) => {
                                    let n = p.len().min(rb.remaining());
                                    rb.put_slice(&p[..n]);
                                    *self.got += n;
                                    &p[n..]
                                }
                                Sink::Stash => p,
                            };
                            if !kept.is_empty() {
                                if *self.plain_pos > 0 && *self.plain_pos == self.plain.len() {
                                    self.plain.clear();
                                    *self.plain_pos = 0;
                                }
                                self.plain.extend_from_slice(kept);
                            }
                        }
                        Err(e) => {
                            fail = Some(e);
                            break;
                        }
                    }
                }
                None
            }
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                loop {
                    match enc.encode(&mut self.out[*self.out_end..]) {
                        Ok(n) => {
                            *self.out_end += n;
                            break;
                        }
                        Err(EncodeError::InsufficientSize(s)) => {
                            self.out.resize(*self.out_end + s.required_size, 0);
                        }
                        Err(e) => {
                            fail = Some(general(e));
                            break;
                        }
                    }
                }
                None
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                // The records are in `out`; the caller flushes them before
                // it waits for the peer.
                t.done();
                None
            }
            Ok(ConnectionState::BlockedHandshake) => Some(Step::NeedRead),
            Ok(ConnectionState::WriteTraffic(mut w)) => match want {
                Want::Read => Some(if got > 0 {
                    Step::Data(got)
                } else {
                    Step::NeedRead
                }),
                Want::Seal(data) => loop {
                    match w.encrypt(data, &mut self.out[*self.out_end..]) {
                        Ok(n) => {
                            *self.out_end += n;
                            break Some(Step::Sealed);
                        }
                        Err(EncryptError::InsufficientSize(s)) => {
                            self.out.resize(*self.out_end + s.required_size, 0);
                        }
                        Err(e) => {
                            fail = Some(general(e));
                            break None;
                        }
                    }
                },
                Want::Close => loop {
                    match w.queue_close_notify(&mut self.out[*self.out_end..]) {
                        Ok(n) => {
                            *self.out_end += n;
                            break Some(Step::Sealed);
                        }
                        Err(EncryptError::InsufficientSize(s)) => {
                            self.out.resize(*self.out_end + s.required_size, 0);
                        }
                        Err(e) => {
                            fail = Some(general(e));
                            break None;
                        }
                    }
                },
            },
            Ok(ConnectionState::PeerClosed) => {
                *self.peer_closed = true;
                match want {
                    // Writing after the peer's close_notify is allowed
                    // (half-close): the next round gives WriteTraffic.
                    Want::Seal(_) | Want::Close => None,
                    Want::Read => Some(if got > 0 { Step::Data(got) } else { Step::Eof }),
                }
            }
            Ok(ConnectionState::Closed) => {
                *self.peer_closed = true;
                match want {
                    Want::Seal(_) | Want::Close => {
                        fail = Some(general("connection closed"));
                        None
                    }
                    Want::Read => Some(if got > 0 { Step::Data(got) } else { Step::Eof }),
                }
            }
            Ok(_) => {
                fail = Some(general("unexpected TLS state"));
                None
            }
        };
        (discard, step, fail)
    }
}

/// One round after an error: encodes the alert rustls queued; whether to go
/// round again.
pub(super) fn alert_step<Data>(
    state: Result<ConnectionState<'_, '_, Data>, rustls::Error>,
    out: &mut [u8],
    out_end: &mut usize,
) -> bool {
    match state {
        Ok(ConnectionState::EncodeTlsData(mut enc)) => {
            if let Ok(n) = enc.encode(&mut out[*out_end..]) {
                *out_end += n;
            }
            true
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            true
        }
        _ => false,
    }
}
