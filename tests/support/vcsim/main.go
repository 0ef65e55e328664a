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
// run in those VMs (the simulator's default: not running); -guest-net
// "NAME=IP/PREFIX,GATEWAY,DNS;..." what their Tools report of the network (guest.net for
// the first NIC, guest.ipStack's default route and DNS, guest.ipAddress). The datastore's /folder URL
// (PUT and GET, the simulator's own handler) answers only a request carrying a
// vmware_soap_session cookie, as vCenter does. /vcsim-test/stats says how many /folder GETs
// came, how many ran at once at most and the Range headers; /vcsim-test/fault?cut_after=N&count=K
// cuts the next K /folder GET responses longer than N bytes after N body bytes (the
// connection dropped), and
// delay_ms=D makes each /folder GET wait D ms first (so that parallel readers overlap).
//
// Changed block tracking (CBT), which the simulator lacks, for the warm import tests:
//   - POST /vcsim-test/write?disk=<datastore path of a descriptor, "[LocalDS_0] vm/d.vmdk">
//     &offset=N writes the request body at byte N of the descriptor's raw extent (d-flat.vmdk
//     beside it, in the datastore's local directory), as a guest would, and logs (N, length)
//     for that disk under the next sequence number (one counter, from 1): {"seq": n}. 404: no
//     such datastore, descriptor or flat file; 400: a bad query, an empty body, or a write
//     past the flat file's end. Like every /vcsim-test/ switch it needs no session.
//   - CreateSnapshot_Task of a VM whose config.changeTrackingEnabled is true gives each
//     VirtualDiskFlatVer2 disk the change id "52 76 cbt-vcsim <deviceKey>/<seq>", seq being
//     the last sequence number written (0: none yet), in the snapshot's config (fixed: each
//     snapshot gets its own copies of the disks) and in the VM's config (the latest). With
//     CBT off change ids are left as they are (empty). The simulator itself (0.24.2) leaves
//     disk backings alone on snapshots: no delta disk, fileName and parent unchanged.
//   - VirtualMachine.QueryChangedDiskAreas(snapshot, deviceKey, startOffset, changeId):
//     changeId "*" gives the runs of 64 KiB blocks of the flat file that are not all zeros
//     (the file as it is now: the simulator keeps no copy per snapshot); a change id of this
//     harness, "<key>/<from>", gives the union of the writes logged for that disk with
//     from < seq <= to, to being the seq in the snapshot's own change id for the disk; both
//     sorted and merged (overlapping or touching areas joined), cut to start at startOffset
//     (length = capacity - startOffset, all in one answer). Faults: FileFault when CBT is
//     off on the VM or the snapshot's disk has no change id (taken with CBT off);
//     InvalidArgument for no or another VM's snapshot, an unknown deviceKey, a startOffset
//     outside the disk, a change id that does not parse, names another disk or is newer
//     than the snapshot. The simulator finds methods on its own VirtualMachine type, and
//     wrapping the VMs in its registry breaks CreateSnapshot_Task (snapshot.go asserts
//     *simulator.VirtualMachine), so this request's _this is re-typed on its way in to a
//     per-VM object of type VcsimCbtVirtualMachine, same id (see redirectQuery); sessions,
//     decoding and faults stay the simulator's.
//   - The tasks of RemoveSnapshot_Task and RevertToSnapshot_Task name the VM as info.entity
//     (the simulator names the snapshot, which pyvmomi refuses when it reads task.info).
//   - A Fetch (pyvmomi's property accessor) of an unset property, such as vm.snapshot of a VM
//     without snapshots, answers no value instead of the simulator's panic (see unsetFetch).
//
// Performance statistics set per VM, for the tests of vmferry's mapping of them (the
// simulator's QueryPerf makes up noisy samples from canned data):
//   - POST /vcsim-test/perf?vm=NAME with {"interval_s": S, "counters": {"cpu.usage.average":
//     [v, ...], ...}} (int64 values, oldest first) sets that VM's series, replacing any set
//     before: {"vm": NAME, "samples": N}. Counter names are "<group>.<name>.<rollup>" of
//     perfManager.perfCounter (groupInfo.key, nameInfo.key, rollupType). 404: no VM of that
//     name; 400: no vm=, a body that is not that JSON object, interval_s not > 0, no counters,
//     an unknown counter name, an empty list or lists of different lengths N. No session.
//   - PerformanceManager.QueryPerf answers each QuerySpec whose entity is a VM with series set
//     from them, with no noise, whatever its intervalId: sample i (0: the oldest) is stamped
//     now - (N-1-i)*S (whole seconds, UTC) with interval S; only samples with startTime <
//     stamp <= endTime (when given: startTime exclusive, as vCenter's realtime statistics)
//     are kept, then the newest maxSample of them (when > 0); one PerfEntityMetric, its
//     sampleInfo and each PerfMetricIntSeries oldest first, zeros included (the simulator's
//     encoder drops every 0 of its own series, see PerfMetricIntSeries). A metricId of a
//     counter set, with instance "" or "*", gets its values (instance ""); any other
//     metricId zeros, as many; no metricId: every counter set, by counter id. Other specs,
//     and requests without such a spec, get the simulator's own answer. The simulator
//     dispatches on the object registered under the moref, so a perfManager (embedding the
//     simulator's PerformanceManager by value, see there) is registered in its place:
//     QueryAvailablePerfMetric and perfManager.perfCounter stay the simulator's.
//   - PerformanceManager.QueryPerfCounter answers (the simulator's panics on every call).
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// folderGuard wraps the simulator's handler: /folder needs a session cookie, is counted
// and may be made to fail; /vcsim-test/ reads and sets that.
type folderGuard struct {
	next       http.Handler
	cbt        *cbt
	perf       *perf
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
	if r.URL.Path == "/vcsim-test/write" {
		g.cbt.write(w, r)
		return
	}
	if r.URL.Path == "/vcsim-test/perf" {
		g.perf.set(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/vcsim-test/") {
		g.control(w, r)
		return
	}
	if r.URL.Path == "/sdk" && r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		switch sdkMethodOf(body) {
		case "QueryChangedDiskAreas":
			body = g.cbt.redirectQuery(body)
		case "Fetch":
			defer unsetFetch(w)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
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

// cbt is the harness's changed block tracking: the guest writes logged per disk (by the
// descriptor's datastore path) and the change ids of snapshots (see the header).
type cbt struct {
	mu  sync.Mutex
	seq int64
	log map[string][]extent
}

type extent struct{ seq, offset, length int64 }

const blockSize = 64 << 10 // the "*" query's granularity

func changeID(key int32, seq int64) string { return fmt.Sprintf("52 76 cbt-vcsim %d/%d", key, seq) }

func parseChangeID(id string) (key int32, seq int64, ok bool) {
	_, err := fmt.Sscanf(id, "52 76 cbt-vcsim %d/%d", &key, &seq)
	return key, seq, err == nil && changeID(key, seq) == id
}

// onDisk: a datastore path in its canonical form and where that file is on this machine.
func onDisk(dsPath string) (string, string, bool) {
	var p object.DatastorePath
	if !p.FromString(dsPath) || p.Path == "" {
		return "", "", false
	}
	for _, e := range simulator.Map.All("Datastore") {
		if ds := e.(*simulator.Datastore); ds.Name == p.Datastore {
			return p.String(), filepath.Join(ds.Info.GetDatastoreInfo().Url, p.Path), true
		}
	}
	return "", "", false
}

// flatOf: a monolithicFlat descriptor's raw extent, beside it (d.vmdk -> d-flat.vmdk).
func flatOf(descriptor string) string {
	return strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
}

// write is /vcsim-test/write: a guest write into a disk's flat file, logged.
func (c *cbt) write(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	data, _ := io.ReadAll(r.Body)
	switch {
	case r.Method != http.MethodPost:
		http.Error(w, "write: POST the bytes", http.StatusMethodNotAllowed)
		return
	case err != nil || offset < 0 || len(data) == 0 || !strings.HasSuffix(q.Get("disk"), ".vmdk"):
		http.Error(w, "write: needs disk=<[ds] path.vmdk>, offset=<N >= 0> and a body",
			http.StatusBadRequest)
		return
	}
	disk, descriptor, found := onDisk(q.Get("disk"))
	if _, err := os.Stat(descriptor); !found || err != nil {
		http.Error(w, fmt.Sprintf("write: no disk %q", q.Get("disk")), http.StatusNotFound)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.OpenFile(flatOf(descriptor), os.O_WRONLY, 0)
	if err != nil {
		http.Error(w, fmt.Sprintf("write: %v", err), http.StatusNotFound)
		return
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || offset+int64(len(data)) > info.Size() {
		http.Error(w, fmt.Sprintf("write: %d bytes at %d is past the end of %s",
			len(data), offset, f.Name()), http.StatusBadRequest)
		return
	}
	if _, err := f.WriteAt(data, offset); err != nil {
		http.Error(w, fmt.Sprintf("write: %v", err), http.StatusInternalServerError)
		return
	}
	c.seq++
	c.log[disk] = append(c.log[disk], extent{c.seq, offset, int64(len(data))})
	out, _ := json.Marshal(map[string]int64{"seq": c.seq})
	w.Write(out)
}

// The registry calls these for every object (c is one of its handlers, see main).
func (c *cbt) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VcsimCbt", Value: "cbt"}
}
func (c *cbt) UpdateObject(mo.Reference, []types.PropertyChange) {}
func (c *cbt) RemoveObject(types.ManagedObjectReference)         {}

// PutObject sees each snapshot as CreateSnapshot_Task registers it, its Config a shallow
// copy of its VM's (the same disks): it gets its own copies of the disks, carrying the
// change ids when CBT is on, and so does the VM. The task holds the VM's lock.
// It also gives a snapshot's own tasks (RemoveSnapshot_Task, RevertToSnapshot_Task) the VM
// as info.entity, as vSphere does: the simulator puts the snapshot there, which is no
// ManagedEntity, and pyvmomi then fails to read the task's info.
func (c *cbt) PutObject(o mo.Reference) {
	if task, ok := o.(*simulator.Task); ok && task.Info.Entity != nil &&
		task.Info.Entity.Type == "VirtualMachineSnapshot" {
		if snapshot, ok := simulator.Map.Get(*task.Info.Entity).(*simulator.VirtualMachineSnapshot); ok {
			vm := snapshot.Vm
			task.Info.Entity, task.Info.EntityName = &vm, vm.Value
		}
	}
	snapshot, ok := o.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm := simulator.Map.Get(snapshot.Vm).(*simulator.VirtualMachine)
	tracked := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	c.mu.Lock()
	seq := c.seq
	c.mu.Unlock()
	vmDevices := append([]types.BaseVirtualDevice(nil), vm.Config.Hardware.Device...)
	own := append([]types.BaseVirtualDevice(nil), vm.Config.Hardware.Device...)
	for i, device := range vmDevices {
		disk, ok := device.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		id := backing.ChangeId
		if tracked {
			id = changeID(disk.Key, seq)
			vmDevices[i] = withChangeID(disk, backing, id)
		}
		own[i] = withChangeID(disk, backing, id)
	}
	snapshot.Config.Hardware.Device = own
	if tracked {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vmDevices}})
	}
}

func withChangeID(disk *types.VirtualDisk, backing *types.VirtualDiskFlatVer2BackingInfo,
	id string) *types.VirtualDisk {
	d, b := *disk, *backing
	b.ChangeId = id
	d.Backing = &b
	return &d
}

const cbtVMType = "VcsimCbtVirtualMachine"

var (
	sdkMethod = regexp.MustCompile(`<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)[\s/>]`)
	queryThis = regexp.MustCompile(`(<(?:\w+:)?_this\s[^>]*\btype=")VirtualMachine("[^>]*>)([^<]+)<`)
)

// sdkMethodOf: the method a SOAP request calls (its Body's first element).
func sdkMethodOf(body []byte) string {
	if m := sdkMethod.FindSubmatch(body); m != nil {
		return string(m[1])
	}
	return ""
}

// redirectQuery re-types a QueryChangedDiskAreas request's _this (VirtualMachine vm-N) to
// VcsimCbtVirtualMachine vm-N, registered on first use, which the simulator's dispatcher
// then calls (with its session check and its fault encoding).
func (c *cbt) redirectQuery(body []byte) []byte {
	m := queryThis.FindSubmatch(body)
	if m == nil {
		return body
	}
	ref := types.ManagedObjectReference{Type: cbtVMType, Value: string(m[3])}
	if simulator.Map.Get(ref) == nil {
		simulator.Map.Put(&cbtVM{Self: ref, cbt: c})
	}
	return queryThis.ReplaceAll(body, []byte("${1}"+cbtVMType+"${2}${3}<"))
}

// unsetFetch answers a Fetch of a property that is not set (pyvmomi's vm.snapshot of a VM
// without snapshots) as vSphere does, with no value: the simulator (0.24.2) indexes the
// empty MissingSet of its answer and panics. Deferred by ServeHTTP; other panics go on.
func unsetFetch(w http.ResponseWriter) {
	v := recover()
	if v == nil {
		return
	}
	if err, ok := v.(runtime.Error); !ok || !strings.Contains(err.Error(), "index out of range") {
		panic(v)
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprint(w, xml.Header,
		`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>`,
		`<FetchResponse xmlns="urn:vim25"></FetchResponse></soapenv:Body></soapenv:Envelope>`)
}

// cbtVM answers QueryChangedDiskAreas for the VirtualMachine of the same id.
type cbtVM struct {
	Self types.ManagedObjectReference
	cbt  *cbt
}

func (p *cbtVM) Reference() types.ManagedObjectReference { return p.Self }

func (p *cbtVM) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: p.Self.Value}
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		body.Fault_ = simulator.Fault("no such VM", &types.ManagedObjectNotFound{Obj: ref})
		return body
	}
	simulator.Map.WithLock(vm, func() {
		info, msg, fault := p.cbt.query(vm, req)
		if fault != nil {
			body.Fault_ = simulator.Fault(msg, fault)
		} else {
			body.Res = &types.QueryChangedDiskAreasResponse{Returnval: *info}
		}
	})
	return body
}

func invalid(property string) (*types.DiskChangeInfo, string, types.BaseMethodFault) {
	return nil, "A specified parameter was not correct: " + property,
		&types.InvalidArgument{InvalidProperty: property}
}

// query answers QueryChangedDiskAreas, or says which fault (and its message), under vm's lock.
func (c *cbt) query(vm *simulator.VirtualMachine, req *types.QueryChangedDiskAreas) (
	*types.DiskChangeInfo, string, types.BaseMethodFault) {
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return nil, "changed block tracking is not enabled on " + vm.Name,
			&types.FileFault{File: vm.Config.Files.VmPathName}
	}
	if req.Snapshot == nil {
		return invalid("snapshot")
	}
	snapshot, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok || snapshot.Vm != vm.Self {
		return invalid("snapshot")
	}
	var disk *types.VirtualDisk
	var backing *types.VirtualDiskFlatVer2BackingInfo
	for _, device := range snapshot.Config.Hardware.Device {
		if d, ok := device.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
			backing, _ = d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		}
	}
	if backing == nil { // no such disk, or not one the simulator makes
		return invalid("deviceKey")
	}
	capacity := disk.CapacityInBytes
	if capacity == 0 {
		capacity = disk.CapacityInKB * 1024
	}
	if req.StartOffset < 0 || req.StartOffset > capacity {
		return invalid("startOffset")
	}
	name, descriptor, found := onDisk(backing.FileName)
	var areas []types.DiskChangeExtent
	if req.ChangeId == "*" {
		var err error
		if !found {
			err = fmt.Errorf("no datastore for %s", backing.FileName)
		} else {
			areas, err = dataAreas(flatOf(descriptor), capacity)
		}
		if err != nil {
			return nil, err.Error(), &types.FileFault{File: backing.FileName}
		}
	} else {
		key, from, ok := parseChangeID(req.ChangeId)
		_, to, tracked := parseChangeID(backing.ChangeId)
		switch {
		case !tracked:
			return nil, "the snapshot's disk has no change id (taken with CBT off)",
				&types.FileFault{File: backing.FileName}
		case !ok || key != disk.Key || from > to:
			return invalid("changeId")
		}
		c.mu.Lock()
		for _, e := range c.log[name] {
			if e.seq > from && e.seq <= to {
				areas = append(areas, types.DiskChangeExtent{Start: e.offset, Length: e.length})
			}
		}
		c.mu.Unlock()
	}
	return &types.DiskChangeInfo{StartOffset: req.StartOffset, Length: capacity - req.StartOffset,
		ChangedArea: merged(areas, req.StartOffset, capacity)}, "", nil
}

// dataAreas: the blocks of a flat file, up to capacity, that are not all zeros.
func dataAreas(flat string, capacity int64) ([]types.DiskChangeExtent, error) {
	f, err := os.Open(flat)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var areas []types.DiskChangeExtent
	block, zeros := make([]byte, blockSize), make([]byte, blockSize)
	for start := int64(0); start < capacity; start += blockSize {
		n, err := f.ReadAt(block, start)
		if n > 0 && !bytes.Equal(block[:n], zeros[:n]) {
			areas = append(areas, types.DiskChangeExtent{Start: start, Length: int64(n)})
		}
		if err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return areas, nil
}

// merged: the areas cut to [lo, hi), sorted, overlapping or adjacent ones joined.
func merged(areas []types.DiskChangeExtent, lo, hi int64) []types.DiskChangeExtent {
	sort.Slice(areas, func(i, j int) bool { return areas[i].Start < areas[j].Start })
	var out []types.DiskChangeExtent
	for _, a := range areas {
		start, end := a.Start, a.Start+a.Length
		if start < lo {
			start = lo
		}
		if end > hi {
			end = hi
		}
		if start >= end {
			continue
		}
		if n := len(out); n > 0 && start <= out[n-1].Start+out[n-1].Length {
			if end > out[n-1].Start+out[n-1].Length {
				out[n-1].Length = end - out[n-1].Start
			}
			continue
		}
		out = append(out, types.DiskChangeExtent{Start: start, Length: end - start})
	}
	return out
}

// perf is the harness's performance statistics: the series /vcsim-test/perf sets per VM,
// which QueryPerf then gives (see the header).
type perf struct {
	// counter names, "<group>.<name>.<rollup>", to perfCounter keys; perfCounter by key
	ids    map[string]int32
	info   map[int32]types.PerfCounterInfo
	mu     sync.Mutex
	series map[types.ManagedObjectReference]*perfSeries // by VM
}

// perfSeries: one VM's counters (by counter id), n values each, oldest first, interval
// seconds apart. Never changed once stored: a new /vcsim-test/perf replaces it whole.
type perfSeries struct {
	interval int32
	n        int
	values   map[int32][]int64
}

// perfManager is the simulator's PerformanceManager with QueryPerf answered from the series
// set (see QueryPerf). It is registered in the simulator's place, under the same moref, and
// holds a copy of it by value: the property collector reads a wrapper's properties
// (perfManager.perfCounter) through its first field, down to the mo type, and panics on a
// pointer there (getManagedObject, property_collector.go). The copy shares the simulator's
// counters and sample data (slices and maps), its other methods (QueryAvailablePerfMetric,
// QueryPerfProviderSummary, ...) are promoted, and nothing in the simulator asserts the
// type *simulator.PerformanceManager (its dispatcher finds methods by name, by reflection).
type perfManager struct {
	simulator.PerformanceManager
	perf *perf
}

// installPerf puts a perfManager in place of the simulator's PerformanceManager.
func installPerf() *perf {
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	own, ok := simulator.Map.Get(*si.Content.PerfManager).(*simulator.PerformanceManager)
	if !ok {
		log.Fatalf("no PerformanceManager %v", si.Content.PerfManager)
	}
	p := &perf{ids: map[string]int32{}, info: map[int32]types.PerfCounterInfo{},
		series: map[types.ManagedObjectReference]*perfSeries{}}
	for _, counter := range own.PerfCounter {
		p.info[counter.Key] = counter
		if counter.GroupInfo != nil && counter.NameInfo != nil {
			name := fmt.Sprintf("%s.%s.%s", counter.GroupInfo.GetElementDescription().Key,
				counter.NameInfo.GetElementDescription().Key, counter.RollupType)
			p.ids[name] = counter.Key // unique in the model: 560 counters, 560 names
		}
	}
	simulator.Map.Put(&perfManager{PerformanceManager: *own, perf: p})
	return p
}

// vmNamed: the simulator's VM of that name, or nil.
func vmNamed(name string) *simulator.VirtualMachine {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		if vm := entity.(*simulator.VirtualMachine); vm.Name == name {
			return vm
		}
	}
	return nil
}

// set is /vcsim-test/perf?vm=NAME: the body's series become the VM's (replacing any set
// before): {"interval_s": S, "counters": {"<group>.<name>.<rollup>": [v, ...], ...}}.
func (p *perf) set(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("vm")
	switch {
	case r.Method != http.MethodPost:
		http.Error(w, "perf: POST the series", http.StatusMethodNotAllowed)
		return
	case name == "":
		http.Error(w, "perf: needs vm=<name>", http.StatusBadRequest)
		return
	}
	vm := vmNamed(name)
	if vm == nil {
		http.Error(w, fmt.Sprintf("perf: no VM %q", name), http.StatusNotFound)
		return
	}
	var body struct {
		IntervalS int32              `json:"interval_s"`
		Counters  map[string][]int64 `json:"counters"`
	}
	decoder := json.NewDecoder(r.Body)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&body); err != nil {
		http.Error(w, fmt.Sprintf("perf: bad body: %v", err), http.StatusBadRequest)
		return
	}
	if decoder.More() {
		http.Error(w, "perf: bad body: more than one JSON value", http.StatusBadRequest)
		return
	}
	series, err := p.parse(body.IntervalS, body.Counters)
	if err != nil {
		http.Error(w, "perf: "+err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.series[vm.Self] = series
	p.mu.Unlock()
	out, _ := json.Marshal(map[string]interface{}{"vm": name, "samples": series.n})
	w.Write(out)
}

// parse checks a /vcsim-test/perf body: a positive interval, at least one counter, every
// name one of perfCounter's, every list of the same length, at least one value.
func (p *perf) parse(interval int32, counters map[string][]int64) (*perfSeries, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("interval_s must be a positive number of seconds, not %d", interval)
	}
	if len(counters) == 0 {
		return nil, fmt.Errorf("no counters")
	}
	series := &perfSeries{interval: interval, n: -1, values: map[int32][]int64{}}
	for name, values := range counters {
		id, known := p.ids[name]
		switch {
		case !known:
			return nil, fmt.Errorf("no counter %q (<group>.<name>.<rollup> of perfCounter)", name)
		case len(values) == 0:
			return nil, fmt.Errorf("counter %q has no values", name)
		case series.n >= 0 && len(values) != series.n:
			return nil, fmt.Errorf("counter %q has %d values, another %d", name, len(values),
				series.n)
		}
		series.n = len(values)
		series.values[id] = values
	}
	return series, nil
}

// QueryPerfCounter: the counters of these ids, InvalidArgument for an unknown one, as the
// simulator's would (0.24.2), which writes into a response it never allocated and so
// panics on every call (the client sees the connection closed).
func (m *perfManager) QueryPerfCounter(ctx *simulator.Context,
	req *types.QueryPerfCounter) soap.HasFault {
	body := &methods.QueryPerfCounterBody{Req: req, Res: &types.QueryPerfCounterResponse{}}
	for _, id := range req.CounterId {
		info, ok := m.perf.info[id]
		if !ok {
			body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "CounterId"})
			return body
		}
		body.Res.Returnval = append(body.Res.Returnval, info)
	}
	return body
}

// QueryPerf answers each QuerySpec whose entity has series set from them (see answer) and
// leaves the others, and every request without such a spec, to the simulator.
func (m *perfManager) QueryPerf(ctx *simulator.Context, req *types.QueryPerf) soap.HasFault {
	now := time.Now().UTC().Truncate(time.Second)
	own := map[int]*types.PerfEntityMetric{}
	others := *req
	others.QuerySpec = nil
	for i, spec := range req.QuerySpec {
		if metric := m.perf.answer(spec, now); metric != nil {
			own[i] = metric
		} else {
			others.QuerySpec = append(others.QuerySpec, spec)
		}
	}
	if len(own) == 0 {
		return m.PerformanceManager.QueryPerf(ctx, req)
	}
	body := m.PerformanceManager.QueryPerf(ctx, &others).(*methods.QueryPerfBody)
	body.Req = req
	theirs := body.Res.Returnval
	body.Res.Returnval = make([]types.BasePerfEntityMetricBase, len(req.QuerySpec))
	for i := range req.QuerySpec {
		if metric, ok := own[i]; ok {
			body.Res.Returnval[i] = metric
		} else {
			body.Res.Returnval[i], theirs = theirs[0], theirs[1:]
		}
	}
	return body
}

// PerfMetricIntSeries is types.PerfMetricIntSeries without omitempty on its values: the
// SOAP encoder (vim25/xml) applies it to each element of a slice, so every sample of value 0
// would be left out and the series come out shorter than sampleInfo (the simulator's own
// answers have this flaw). Its name is the xsi:type the encoder writes.
type PerfMetricIntSeries struct {
	types.PerfMetricSeries
	Value []int64 `xml:"value"`
}

// answer: what QueryPerf gives for spec when its entity has series set, else nil. Sample i
// (0: the oldest of n) is stamped now - (n-1-i)*interval; those with startTime < stamp <=
// endTime are kept (vCenter's realtime semantics), then the newest maxSample of them. Each
// metricId gets the values set for its counter (instance "" or "*": answered as ""), or
// zeros (its id as asked); no metricId: every counter set, by id.
func (p *perf) answer(spec types.PerfQuerySpec, now time.Time) *types.PerfEntityMetric {
	p.mu.Lock()
	series := p.series[spec.Entity]
	p.mu.Unlock()
	if series == nil {
		return nil
	}
	metric := &types.PerfEntityMetric{PerfEntityMetricBase: types.PerfEntityMetricBase{
		Entity: spec.Entity}}
	var kept []int
	for i := 0; i < series.n; i++ {
		age := time.Duration(series.n-1-i) * time.Duration(series.interval) * time.Second
		stamp := now.Add(-age)
		if (spec.StartTime != nil && !stamp.After(*spec.StartTime)) ||
			(spec.EndTime != nil && stamp.After(*spec.EndTime)) {
			continue
		}
		kept = append(kept, i)
		metric.SampleInfo = append(metric.SampleInfo,
			types.PerfSampleInfo{Timestamp: stamp, Interval: series.interval})
	}
	if limit := int(spec.MaxSample); limit > 0 && len(kept) > limit {
		kept, metric.SampleInfo = kept[len(kept)-limit:], metric.SampleInfo[len(kept)-limit:]
	}
	ids := spec.MetricId
	if len(ids) == 0 {
		for id := range series.values {
			ids = append(ids, types.PerfMetricId{CounterId: id})
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i].CounterId < ids[j].CounterId })
	}
	for _, id := range ids {
		values, set := series.values[id.CounterId]
		out := &PerfMetricIntSeries{PerfMetricSeries: types.PerfMetricSeries{Id: id},
			Value: make([]int64, len(kept))}
		if set && (id.Instance == "" || id.Instance == "*") {
			out.Id.Instance = ""
			for j, i := range kept {
				out.Value[j] = values[i]
			}
		}
		metric.Value = append(metric.Value, out)
	}
	return metric
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

// guestNetworks sets what VMware Tools report of each named VM's network: its first NIC's
// address (guest.net, with the NIC's MAC and port group), the default route's gateway and
// the DNS servers (guest.ipStack), and guest.ipAddress. "NAME=IP/PREFIX,GATEWAY,DNS;...".
func guestNetworks(spec string) {
	for _, item := range strings.Split(spec, ";") {
		if item == "" {
			continue
		}
		name, value, _ := strings.Cut(item, "=")
		fields := strings.Split(value, ",")
		address, prefix, _ := strings.Cut(fields[0], "/")
		length, err := strconv.Atoi(prefix)
		if len(fields) != 3 || err != nil {
			log.Fatalf("-guest-net %q: expected NAME=IP/PREFIX,GATEWAY,DNS", item)
		}
		var found *simulator.VirtualMachine
		for _, entity := range simulator.Map.All("VirtualMachine") {
			if vm := entity.(*simulator.VirtualMachine); vm.Name == name {
				found = vm
			}
		}
		if found == nil {
			log.Fatalf("-guest-net: no VM %q", name)
		}
		var nic types.BaseVirtualEthernetCard
		for _, device := range found.Config.Hardware.Device {
			if card, ok := device.(types.BaseVirtualEthernetCard); ok {
				nic = card
				break
			}
		}
		if nic == nil {
			log.Fatalf("-guest-net: VM %q has no NIC", name)
		}
		card := nic.GetVirtualEthernetCard()
		found.Guest.IpAddress = address
		found.Guest.Net = []types.GuestNicInfo{{
			Network:        "DC0_DVPG0",
			IpAddress:      []string{address},
			MacAddress:     card.MacAddress,
			Connected:      true,
			DeviceConfigId: card.Key,
			IpConfig: &types.NetIpConfigInfo{IpAddress: []types.NetIpConfigInfoIpAddress{
				{IpAddress: address, PrefixLength: int32(length), State: "preferred"}}},
		}}
		found.Guest.IpStack = []types.GuestStackInfo{{
			DnsConfig: &types.NetDnsConfigInfo{IpAddress: []string{fields[2]}},
			IpRouteConfig: &types.NetIpRouteConfigInfo{IpRoute: []types.NetIpRouteConfigInfoIpRoute{
				{Network: "0.0.0.0", PrefixLength: 0,
					Gateway: types.NetIpRouteConfigInfoGateway{IpAddress: fields[1]}}}},
		}}
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
	guestNet := flag.String("guest-net", "",
		"NAME=IP/PREFIX,GATEWAY,DNS;...: what VMware Tools report of a VM's first NIC")
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
	guestNetworks(*guestNet)
	changes := &cbt{log: map[string][]extent{}}
	simulator.Map.AddHandler(changes)
	statistics := installPerf()
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(*certPath)}}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	server := model.Service.NewServer()
	defer server.Close()
	// swapped before anyone knows the URL (printed below), so before the first request
	server.Config.Handler = &folderGuard{next: server.Config.Handler, cbt: changes,
		perf: statistics}

	shown := *server.URL
	shown.User = nil
	line, _ := json.Marshal(map[string]string{"url": shown.String(), "ca": *certPath})
	os.Stdout.Write(append(line, '\n'))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
