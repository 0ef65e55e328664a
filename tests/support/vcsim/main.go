// vcsim: VMware's vSphere simulator (govmomi's simulator package, vCenter model) served over
// HTTPS for vmferry's tests (tests/support/vcsim.py starts it). Test-only: the product never
// runs it.
//
// It generates a fresh self-signed certificate for 127.0.0.1 and localhost, writes it (PEM)
// to -cert, accepts only -user/-password, listens on -listen (port 0: a free one) and prints
// one JSON line on stdout, {"url": "https://127.0.0.1:PORT/sdk", "ca": "<-cert>"}, once it
// answers. With -trace it writes every SOAP request and response to stderr. It stops on
// SIGTERM or SIGINT.
//
// For the import tests (tests/support/vcsim.py): -tools-running NAME,... says VMware Tools
// run in those VMs (the simulator's default: not running). The datastore's /folder URL
// (PUT and GET, the simulator's own handler) answers only a request carrying a
// vmware_soap_session cookie, as vCenter does. /vcsim-test/stats says how many /folder GETs
// came, how many ran at once at most and the Range headers; /vcsim-test/fault?cut_after=N&count=K
// cuts the next K /folder GET responses longer than N bytes after N body bytes (the
// connection dropped), and
// delay_ms=D makes each /folder GET wait D ms first (so that parallel readers overlap).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// folderGuard wraps the simulator's handler: /folder needs a session cookie, is counted
// and may be made to fail; /vcsim-test/ reads and sets that.
type folderGuard struct {
	next       http.Handler
	mu         sync.Mutex
	gets       int
	active     int
	maxActive  int
	ranges     []string
	cutAfter   int64
	cutCount   int
	delay      time.Duration
	cutsServed int
}

type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.left {
		n, _ := w.ResponseWriter.Write(p[:w.left])
		w.left = 0
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		_ = n
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	w.left -= int64(len(p))
	return w.ResponseWriter.Write(p)
}

func (g *folderGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/vcsim-test/") {
		g.control(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/folder/") {
		g.next.ServeHTTP(w, r)
		return
	}
	if c, err := r.Cookie("vmware_soap_session"); err != nil || c.Value == "" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		g.next.ServeHTTP(w, r)
		return
	}
	g.mu.Lock()
	g.gets++
	g.active++
	if g.active > g.maxActive {
		g.maxActive = g.active
	}
	g.ranges = append(g.ranges, r.Header.Get("Range"))
	delay := g.delay
	cut := int64(-1)
	if g.cutCount > 0 && rangeLonger(r.Header.Get("Range"), g.cutAfter) {
		g.cutCount--
		g.cutsServed++
		cut = g.cutAfter
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.active--
		g.mu.Unlock()
	}()
	time.Sleep(delay)
	if cut >= 0 {
		w = &cutWriter{w, cut}
	}
	g.next.ServeHTTP(w, r)
}

// rangeLonger: does a GET with this Range header ask for more than n bytes (no header: yes)?
func rangeLonger(header string, n int64) bool {
	var first, last int64
	if _, err := fmt.Sscanf(header, "bytes=%d-%d", &first, &last); err != nil {
		return true
	}
	return last-first+1 > n
}

func (g *folderGuard) control(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := r.URL.Query()
	switch r.URL.Path {
	case "/vcsim-test/fault":
		g.cutAfter, _ = strconv.ParseInt(q.Get("cut_after"), 10, 64)
		g.cutCount, _ = strconv.Atoi(q.Get("count"))
		ms, _ := strconv.Atoi(q.Get("delay_ms"))
		g.delay = time.Duration(ms) * time.Millisecond
	case "/vcsim-test/reset":
		g.gets, g.maxActive, g.ranges, g.cutsServed = 0, 0, nil, 0
	}
	out, _ := json.Marshal(map[string]interface{}{
		"gets": g.gets, "max_concurrent": g.maxActive, "ranges": g.ranges,
		"cuts_served": g.cutsServed,
	})
	w.Write(out)
}

// toolsRunning marks VMware Tools as running in the VMs named.
func toolsRunning(names string) {
	wanted := map[string]bool{}
	for _, name := range strings.Split(names, ",") {
		if name != "" {
			wanted[name] = true
		}
	}
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		if wanted[vm.Name] {
			vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
			vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
			delete(wanted, vm.Name)
		}
	}
	for name := range wanted {
		log.Fatalf("-tools-running: no VM %q", name)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and localhost and writes it to path.
func selfSigned(path string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	template := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim for vmferry tests"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(path, out, 0o644); err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free one)")
	certPath := flag.String("cert", "", "where to write the server's certificate (PEM)")
	user := flag.String("user", "vmferry", "the only user name accepted")
	password := flag.String("password", "vcsim-pass", "the only password accepted")
	trace := flag.Bool("trace", false, "write the SOAP traffic to stderr")
	tools := flag.String("tools-running", "", "VM names (comma-separated) whose VMware Tools run")
	flag.Parse()
	simulator.Trace = *trace
	if *certPath == "" {
		log.Fatal("-cert PATH is required")
	}

	model := simulator.VPX()
	defer model.Remove()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	toolsRunning(*tools)
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(*certPath)}}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	server := model.Service.NewServer()
	defer server.Close()
	// swapped before anyone knows the URL (printed below), so before the first request
	server.Config.Handler = &folderGuard{next: server.Config.Handler}

	shown := *server.URL
	shown.User = nil
	line, _ := json.Marshal(map[string]string{"url": shown.String(), "ca": *certPath})
	os.Stdout.Write(append(line, '\n'))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
