// Raw clients for the broadcast timing: plain sockets read by a few epoll
// loops (one OS thread each) with a minimal frame reader, instead of one
// goroutine and a library reader per connection. A broadcast to 9,900
// connections then costs the client about one read(2) per connection and no
// goroutine wake-up, so the clients (which share the machine's cores with
// the proxy) time the proxy rather than themselves.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rawConn is one connection's frame reader state.
type rawConn struct {
	fd   int
	pend []byte // bytes of an incomplete frame
}

// rounds records per round how many connections got the message and when
// the last one did (ns on this process's monotonic clock, since start).
type roundStats struct {
	count []atomic.Int64
	last  []atomic.Int64
	done  []chan struct{}
	n     int64
	start time.Time
}

func (s *roundStats) receipt(data []byte) {
	end := bytes.IndexByte(data, ':')
	if len(data) < 2 || data[0] != 'R' || end < 0 {
		return
	}
	r, err := strconv.Atoi(string(data[1:end]))
	if err != nil || r < 0 || r >= len(s.count) {
		return
	}
	now := int64(time.Since(s.start))
	for {
		old := s.last[r].Load()
		if now <= old || s.last[r].CompareAndSwap(old, now) {
			break
		}
	}
	if s.count[r].Add(1) == s.n {
		close(s.done[r])
	}
}

// rawDial opens one WebSocket connection with blocking syscalls and returns
// it non-blocking, with any bytes that came behind the 101.
func rawDial(host string, port int, path string) (*rawConn, error) {
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return nil, fmt.Errorf("bad IPv4 host %q", host)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	if err := syscall.Connect(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
	if _, err := syscall.Write(fd, []byte(req)); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	var head []byte
	buf := make([]byte, 4096)
	for {
		m, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			syscall.Close(fd)
			return nil, fmt.Errorf("handshake read: %v", err)
		}
		head = append(head, buf[:m]...)
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
				syscall.Close(fd)
				return nil, fmt.Errorf("handshake: %q", head[:i])
			}
			if err := syscall.SetNonblock(fd, true); err != nil {
				syscall.Close(fd)
				return nil, err
			}
			return &rawConn{fd: fd, pend: append([]byte(nil), head[i+4:]...)}, nil
		}
		if len(head) > 16384 {
			syscall.Close(fd)
			return nil, fmt.Errorf("handshake head too long")
		}
	}
}

// frames walks the complete server frames in c.pend (unmasked, as a server
// sends them), calls on for each text payload and keeps the incomplete rest.
func (c *rawConn) frames(on func([]byte)) {
	p := c.pend
	for len(p) >= 2 {
		op := p[0] & 0x0F
		n := int(p[1] & 0x7F)
		h := 2
		switch n {
		case 126:
			if len(p) < 4 {
				break
			}
			n, h = int(p[2])<<8|int(p[3]), 4
		case 127:
			if len(p) < 10 {
				break
			}
			n, h = 0, 10
			for i := 2; i < 10; i++ {
				n = n<<8 | int(p[i])
			}
		}
		if (n == 126 && h == 2) || (n == 127 && h == 2) || len(p) < h+n {
			break
		}
		if op == 0x1 {
			on(p[h : h+n])
		}
		p = p[h+n:]
	}
	c.pend = append(c.pend[:0], p...)
}

// rawOpen dials n connections (conc at a time) to ws://host:port/path.
func rawOpen(url string, n, conc int) []*rawConn {
	var host, path string
	var port int
	rest := url
	if len(rest) > 5 && rest[:5] == "ws://" {
		rest = rest[5:]
	}
	path = "/"
	if i := bytes.IndexByte([]byte(rest), '/'); i >= 0 {
		rest, path = rest[:i], rest[i:]
	}
	h, p, err := net.SplitHostPort(rest)
	if err != nil {
		fail("bad url " + url)
	}
	host = h
	port, _ = strconv.Atoi(p)
	conns := make([]*rawConn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := rawDial(host, port, path)
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail(err.Error())
	}
	return conns
}

// rawRead runs `loops` epoll loops over conns until stop closes.
func rawRead(conns []*rawConn, loops int, on func([]byte), stop chan struct{}) {
	for l := 0; l < loops; l++ {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			fail("epoll: " + err.Error())
		}
		mine := map[int32]*rawConn{}
		for i := l; i < len(conns); i += loops {
			c := conns[i]
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(c.fd)}
			if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
				fail("epoll_ctl: " + err.Error())
			}
			mine[int32(c.fd)] = c
			// Bytes that came with the 101.
			c.frames(on)
		}
		go func() {
			runtime.LockOSThread()
			events := make([]syscall.EpollEvent, 1024)
			buf := make([]byte, 65536)
			for {
				select {
				case <-stop:
					syscall.Close(epfd)
					return
				default:
				}
				k, err := syscall.EpollWait(epfd, events, 100)
				if err != nil && err != syscall.EINTR {
					return
				}
				for i := 0; i < k; i++ {
					c := mine[events[i].Fd]
					for {
						m, err := syscall.Read(c.fd, buf)
						if err == syscall.EINTR {
							continue
						}
						if m <= 0 {
							if err != syscall.EAGAIN {
								// EOF or error: stop watching it.
								_ = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
							}
							break
						}
						if len(c.pend) == 0 {
							// Common case: whole frames in buf, no copy.
							c.pend = buf[:m]
							c.frames(on)
							c.pend = append([]byte(nil), c.pend...)
						} else {
							c.pend = append(c.pend, buf[:m]...)
							c.frames(on)
						}
						if m < len(buf) {
							break
						}
					}
				}
			}
		}()
	}
}
