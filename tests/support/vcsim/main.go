// vcsim: VMware's vSphere simulator (govmomi's simulator package, vCenter model) served over
// HTTPS for vmferry's tests (tests/support/vcsim.py starts it). Test-only: the product never
// runs it.
//
// It generates a fresh self-signed certificate for 127.0.0.1 and localhost, writes it (PEM)
// to -cert, accepts only -user/-password, listens on -listen (port 0: a free one) and prints
// one JSON line on stdout, {"url": "https://127.0.0.1:PORT/sdk", "ca": "<-cert>"}, once it
// answers. With -trace it writes every SOAP request and response to stderr. It stops on
// SIGTERM or SIGINT.
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
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

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
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(*certPath)}}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	server := model.Service.NewServer()
	defer server.Close()

	shown := *server.URL
	shown.User = nil
	line, _ := json.Marshal(map[string]string{"url": shown.String(), "ca": *certPath})
	os.Stdout.Write(append(line, '\n'))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
