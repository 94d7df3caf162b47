//! Standard output for every command. `println!` panics when stdout is a closed pipe
//! (`goldset status | true`) or a full device (`>/dev/full`); everything printed goes through
//! [`Stdout`] instead, which stops writing at the first failure and remembers it:
//! a closed pipe (EPIPE) is a quiet stop — the reader wanted no more, as with `rg` — and any
//! other error is reported once at the end as `error: stdout: …` (exit 2).

use std::cell::RefCell;
use std::io::{self, Write};

/// What became of output so far.
enum State {
    /// Every write went through.
    Open,
    /// The reader went away (EPIPE): nothing more is written, and that is not an error.
    Closed,
    /// A write failed otherwise; nothing more is written.
    Failed(io::Error),
}

/// A line writer that never panics (see the module documentation).
pub struct Stdout {
    inner: RefCell<(Box<dyn Write>, State)>,
}

impl Stdout {
    /// The process's standard output.
    pub fn new() -> Self {
        Self::to(Box::new(io::stdout()))
    }

    /// Output into `writer` (tests use a failing one).
    pub fn to(writer: Box<dyn Write>) -> Self {
        Stdout {
            inner: RefCell::new((writer, State::Open)),
        }
    }

    /// Writes `text` and a newline; after a failure, does nothing.
    pub fn line(&self, text: &str) {
        let mut inner = self.inner.borrow_mut();
        let (writer, state) = &mut *inner;
        if let State::Open = state {
            if let Err(e) = writeln!(writer, "{text}") {
                *state = failed(e);
            }
        }
    }

    /// Copies everything `input` holds (a file `backup --file -` wrote, a generated script);
    /// after a failure of stdout, does nothing. `Err` only when reading `input` failed.
    pub fn copy_from(&self, mut input: impl io::Read) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let (writer, state) = &mut *inner;
        let mut buffer = vec![0; 1 << 16];
        while let State::Open = state {
            let n = match input.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = writer.write_all(&buffer[..n]) {
                *state = failed(e);
            }
        }
        Ok(())
    }

    /// Whether output still reaches a reader (long-running output stops early when not).
    pub fn is_open(&self) -> bool {
        matches!(self.inner.borrow().1, State::Open)
    }

    /// Flushes what is buffered. `Err` holds the first write error other than a closed pipe.
    pub fn finish(&self) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let (writer, state) = &mut *inner;
        if let State::Open = state {
            if let Err(e) = writer.flush() {
                *state = failed(e);
            }
        }
        match std::mem::replace(state, State::Closed) {
            State::Failed(e) => Err(e),
            State::Open | State::Closed => Ok(()),
        }
    }
}

fn failed(e: io::Error) -> State {
    if e.kind() == io::ErrorKind::BrokenPipe {
        State::Closed
    } else {
        State::Failed(e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::rc::Rc;

    /// Takes `room` bytes, then fails every write with `error()`.
    struct Failing {
        room: usize,
        error: fn() -> io::Error,
        written: Rc<RefCell<Vec<u8>>>,
        attempts: Rc<RefCell<usize>>,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            *self.attempts.borrow_mut() += 1;
            if self.room == 0 {
                return Err((self.error)());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.written.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const ENOSPC: i32 = 28;

    pub(crate) fn epipe() -> io::Error {
        io::Error::from(io::ErrorKind::BrokenPipe)
    }

    pub(crate) fn enospc() -> io::Error {
        io::Error::from_raw_os_error(ENOSPC)
    }

    pub(crate) type Probe = (Stdout, Rc<RefCell<Vec<u8>>>, Rc<RefCell<usize>>);

    /// Output that takes `room` bytes, then fails with `error()`; what it took; write calls.
    pub(crate) fn failing(room: usize, error: fn() -> io::Error) -> Probe {
        let written = Rc::new(RefCell::new(Vec::new()));
        let attempts = Rc::new(RefCell::new(0));
        let out = Stdout::to(Box::new(Failing {
            room,
            error,
            written: written.clone(),
            attempts: attempts.clone(),
        }));
        (out, written, attempts)
    }

    #[test]
    fn lines_go_through_until_the_writer_fails() {
        let (out, written, _) = failing(1000, epipe);
        out.line("one");
        out.line("two");
        assert!(out.is_open());
        assert!(out.finish().is_ok());
        assert_eq!(&*written.borrow(), b"one\ntwo\n");
    }

    #[test]
    fn a_closed_pipe_stops_output_quietly() {
        let (out, written, attempts) = failing(4, epipe);
        out.line("one");
        out.line("two");
        assert!(!out.is_open());
        let tried = *attempts.borrow();
        out.line("three");
        assert_eq!(*attempts.borrow(), tried, "no write after the pipe closed");
        assert!(out.finish().is_ok(), "EPIPE is not an error");
        assert_eq!(&*written.borrow(), b"one\n");
    }

    #[test]
    fn other_write_errors_are_kept_for_the_end() {
        let (out, _, attempts) = failing(0, enospc);
        out.line("one");
        assert!(!out.is_open());
        out.line("two");
        assert_eq!(*attempts.borrow(), 1, "the first error stops output");
        let e = out.finish().expect_err("a full device is an error");
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
    }

    #[test]
    fn a_failing_flush_is_an_error_too() {
        struct FlushFails;
        impl Write for FlushFails {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let out = Stdout::to(Box::new(FlushFails));
        out.line("one");
        assert_eq!(out.finish().unwrap_err().to_string(), "disk on fire");
    }
}
