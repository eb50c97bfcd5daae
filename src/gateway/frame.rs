//! RFC 6455 frame reader and writer; pure (no socket, no runtime).
//!
//! The reader never copies payloads: it walks a byte stream and says where
//! frame heads start and payloads end, so the session forwards the bytes it
//! was given unchanged (masking kept) and knows where it may insert its own
//! frames. It takes any split of the stream (a head cut between two reads is
//! kept in a 14-byte buffer), never consumes more than it was given, stops at
//! every head and every frame end, and checks what a gateway must check:
//! reserved opcodes, RSV bits without a negotiated extension, control frames
//! over 125 bytes or fragmented, continuation without a message (and a new
//! message inside one), the masking the role requires, non-minimal lengths,
//! and the reassembled message size. Errors are final.

/// Continuation, text, binary, close, ping, pong.
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Longest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: u64 = 125;

/// Close codes ringmesh sends.
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;

/// Which peer's frames a reader reads: clients must mask, servers must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// A decoded frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// RSV1..3 as bits 2..0.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
    /// Bytes of the head on the wire (2..=14).
    pub head_len: u8,
}

impl FrameHead {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a stream of frames is invalid; the close code says what to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    ReservedOpcode(u8),
    /// RSV bits set that no negotiated extension defines.
    Rsv(u8),
    ControlTooLong(u64),
    FragmentedControl,
    /// A continuation frame outside a fragmented message.
    UnexpectedContinuation,
    /// A new text/binary frame inside a fragmented message.
    ExpectedContinuation,
    /// A client frame without a mask, or a server frame with one.
    Masking,
    /// A length in more bytes than needed, or with the top bit set.
    BadLength,
    /// The reassembled message exceeds the reader's maximum.
    TooBig(u64),
}

impl FrameError {
    /// The close code for the peer that sent the bad frame.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooBig(_) => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::ReservedOpcode(o) => write!(f, "reserved opcode {o:#x}"),
            FrameError::Rsv(r) => write!(f, "RSV bits {r:#05b} without an extension"),
            FrameError::ControlTooLong(n) => write!(f, "control frame of {n} bytes (max 125)"),
            FrameError::FragmentedControl => f.write_str("fragmented control frame"),
            FrameError::UnexpectedContinuation => f.write_str("continuation without a message"),
            FrameError::ExpectedContinuation => f.write_str("new message inside a fragmented one"),
            FrameError::Masking => f.write_str("wrong masking for the sender's role"),
            FrameError::BadLength => f.write_str("non-minimal or oversized payload length"),
            FrameError::TooBig(n) => write!(f, "message of at least {n} bytes over the limit"),
        }
    }
}

/// What one [`FrameReader::advance`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Bytes of the input consumed (head bytes or payload bytes, never both).
    pub consumed: usize,
    /// A head completed with this call.
    pub head: Option<FrameHead>,
    /// The current frame ended with this call (its payload is complete).
    pub frame_done: bool,
}

/// Incremental frame walker; see the module doc.
#[derive(Debug, Clone)]
pub struct FrameReader {
    role: Role,
    rsv_allowed: u8,
    max_message: u64,
    head: [u8; 14],
    fill: u8,
    /// Payload bytes of the current frame still to come.
    left: u64,
    in_payload: bool,
    cur: Option<FrameHead>,
    /// Opcode of the fragmented message in progress.
    fragmented: Option<u8>,
    msg_len: u64,
    failed: Option<FrameError>,
}

impl FrameReader {
    /// A reader for frames sent by `role`; `rsv_allowed` is the RSV bits a
    /// negotiated extension defines (0b100 for permessage-deflate);
    /// `max_message` bounds a reassembled data message.
    pub fn new(role: Role, rsv_allowed: u8, max_message: u64) -> FrameReader {
        FrameReader {
            role,
            rsv_allowed,
            max_message,
            head: [0; 14],
            fill: 0,
            left: 0,
            in_payload: false,
            cur: None,
            fragmented: None,
            msg_len: 0,
            failed: None,
        }
    }

    /// No head or payload is in progress: a whole frame may be inserted here.
    pub fn at_frame_boundary(&self) -> bool {
        self.fill == 0 && !self.in_payload
    }

    /// Between two messages: any frame (a data message too) may go here.
    pub fn at_message_boundary(&self) -> bool {
        self.at_frame_boundary() && self.fragmented.is_none()
    }

    /// What this reader must remember while it waits for more bytes: at a
    /// frame boundary only the fragmented message in progress (16 B; the
    /// reader is 88 B, two in every idle session); inside a frame, or
    /// failed, the whole reader, boxed.
    pub fn park(self) -> Parked {
        if self.at_frame_boundary() && self.failed.is_none() {
            Parked::Boundary {
                fragmented: self.fragmented,
                msg_len: self.msg_len,
            }
        } else {
            Parked::Inside(Box::new(self))
        }
    }
}

/// A [`FrameReader`] while its connection is idle; see [`FrameReader::park`].
#[derive(Debug)]
pub enum Parked {
    /// Between frames: the opcode and length so far of a fragmented
    /// message in progress (none between messages).
    Boundary {
        fragmented: Option<u8>,
        msg_len: u64,
    },
    /// Inside a frame's head or payload, or failed.
    Inside(Box<FrameReader>),
}

impl Parked {
    /// The reader again; `fresh` is a new reader made like the parked one
    /// (same role, RSV bits and maximum), which a boundary's state goes into.
    pub fn unpark(self, mut fresh: FrameReader) -> FrameReader {
        match self {
            Parked::Boundary {
                fragmented,
                msg_len,
            } => {
                fresh.fragmented = fragmented;
                fresh.msg_len = msg_len;
                fresh
            }
            Parked::Inside(r) => *r,
        }
    }

    /// See [`FrameReader::at_message_boundary`].
    pub fn at_message_boundary(&self) -> bool {
        match self {
            Parked::Boundary { fragmented, .. } => fragmented.is_none(),
            Parked::Inside(r) => r.at_message_boundary(),
        }
    }
}

impl FrameReader {
    /// The frame whose payload is being read.
    pub fn current(&self) -> Option<FrameHead> {
        if self.in_payload {
            self.cur
        } else {
            None
        }
    }

    /// Payload bytes of the current frame not consumed yet.
    pub fn payload_left(&self) -> u64 {
        if self.in_payload {
            self.left
        } else {
            0
        }
    }

    /// Consumes `n` payload bytes that went elsewhere (spliced); returns
    /// how many counted (at most [`Self::payload_left`]) and whether the
    /// frame ended.
    pub fn skip_payload(&mut self, n: u64) -> (u64, bool) {
        if !self.in_payload {
            return (0, false);
        }
        let k = n.min(self.left);
        self.left -= k;
        if self.left == 0 {
            self.in_payload = false;
            return (k, true);
        }
        (k, false)
    }

    /// Walks `input`: completes a head (buffering a partial one) or consumes
    /// payload up to the end of the current frame, whichever comes first.
    pub fn advance(&mut self, input: &[u8]) -> Result<Step, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.in_payload {
            let k = (input.len() as u64).min(self.left);
            self.left -= k;
            let done = self.left == 0;
            if done {
                self.in_payload = false;
            }
            return Ok(Step {
                consumed: k as usize,
                head: None,
                frame_done: done,
            });
        }
        let mut consumed = 0;
        loop {
            let need = head_need(&self.head[..usize::from(self.fill)]);
            if usize::from(self.fill) >= need {
                break;
            }
            let Some(&b) = input.get(consumed) else {
                return Ok(Step {
                    consumed,
                    ..Step::default()
                });
            };
            self.head[usize::from(self.fill)] = b;
            self.fill += 1;
            consumed += 1;
        }
        let head = match self.check(decode(&self.head[..usize::from(self.fill)])) {
            Ok(h) => h,
            Err(e) => {
                self.failed = Some(e);
                return Err(e);
            }
        };
        self.fill = 0;
        self.cur = Some(head);
        self.left = head.len;
        self.in_payload = head.len > 0;
        Ok(Step {
            consumed,
            head: Some(head),
            frame_done: head.len == 0,
        })
    }

    /// Validates a complete head against the role and the message state.
    fn check(&mut self, h: Result<FrameHead, FrameError>) -> Result<FrameHead, FrameError> {
        let h = h?;
        if h.rsv & !self.rsv_allowed != 0 {
            return Err(FrameError::Rsv(h.rsv));
        }
        if h.mask.is_some() != (self.role == Role::Client) {
            return Err(FrameError::Masking);
        }
        match h.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !h.fin {
                    return Err(FrameError::FragmentedControl);
                }
                if h.len > MAX_CONTROL {
                    return Err(FrameError::ControlTooLong(h.len));
                }
                // RSV1 (compression) is for data frames only.
                if h.rsv != 0 {
                    return Err(FrameError::Rsv(h.rsv));
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.fragmented.is_some() {
                    return Err(FrameError::ExpectedContinuation);
                }
                self.msg_len = h.len;
                if h.len > self.max_message {
                    return Err(FrameError::TooBig(h.len));
                }
                if !h.fin {
                    self.fragmented = Some(h.opcode);
                }
            }
            OP_CONT => {
                if self.fragmented.is_none() {
                    return Err(FrameError::UnexpectedContinuation);
                }
                if h.rsv != 0 {
                    // RSV1 marks the first frame of a compressed message only.
                    return Err(FrameError::Rsv(h.rsv));
                }
                self.msg_len = self.msg_len.saturating_add(h.len);
                if self.msg_len > self.max_message {
                    return Err(FrameError::TooBig(self.msg_len));
                }
                if h.fin {
                    self.fragmented = None;
                }
            }
            op => return Err(FrameError::ReservedOpcode(op)),
        }
        Ok(h)
    }
}

/// Bytes the head in `b` needs in all (it grows as the length byte is seen).
fn head_need(b: &[u8]) -> usize {
    let Some(&b1) = b.get(1) else { return 2 };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + mask
}

/// Decodes a complete head (exactly [`head_need`] bytes).
fn decode(b: &[u8]) -> Result<FrameHead, FrameError> {
    let (b0, b1) = (b[0], b[1]);
    let short = u64::from(b1 & 0x7f);
    let (len, mut pos) = match short {
        126 => {
            let n = u64::from(u16::from_be_bytes([b[2], b[3]]));
            if n < 126 {
                return Err(FrameError::BadLength);
            }
            (n, 4)
        }
        127 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            let n = u64::from_be_bytes(a);
            if n >> 63 != 0 || n <= 0xffff {
                return Err(FrameError::BadLength);
            }
            (n, 10)
        }
        n => (n, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let m = [b[pos], b[pos + 1], b[pos + 2], b[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(FrameHead {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        mask,
        len,
        head_len: pos as u8,
    })
}

/// Appends a frame head in its minimal encoding.
pub fn write_head(out: &mut Vec<u8>, h: &FrameHead) {
    out.push((u8::from(h.fin) << 7) | ((h.rsv & 7) << 4) | (h.opcode & 0x0f));
    let m = if h.mask.is_some() { 0x80 } else { 0 };
    if h.len < 126 {
        out.push(m | h.len as u8);
    } else if h.len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(h.len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&h.len.to_be_bytes());
    }
    if let Some(k) = h.mask {
        out.extend_from_slice(&k);
    }
}

/// Appends a whole unmasked, uncompressed (RSV = 0) frame: what ringmesh
/// sends to clients.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    write_head(
        out,
        &FrameHead {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            len: payload.len() as u64,
            head_len: 0,
        },
    );
    out.extend_from_slice(payload);
}

/// Appends a whole masked frame with mask `key`: what ringmesh, as the
/// client of the backend, sends it (a close when it ends a session).
pub fn write_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], key: [u8; 4]) {
    write_head(
        out,
        &FrameHead {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            len: payload.len() as u64,
            head_len: 0,
        },
    );
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

/// A close frame's payload: the code and as much of `reason` as fits in a
/// control frame (cut at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_CONTROL as usize - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = Vec::with_capacity(2 + cut);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

/// Whether `code` may be sent in a close frame by an application (RFC 6455
/// §7.4: 1000, 1001..=1003, 1007..=1014 and 3000..=4999).
pub fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests;
