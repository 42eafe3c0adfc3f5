package cuda

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// staged is a fake file system with the listed files and a loader cache.
func staged(vars map[string]string, cache map[string][]string, files ...string) env {
	set := map[string]bool{}
	for _, f := range files {
		set[f] = true
	}
	return env{
		getenv: func(k string) string { return vars[k] },
		exists: func(p string) bool { return set[p] },
		glob: func(pat string) ([]string, error) {
			var out []string
			seen := map[string]bool{}
			for f := range set {
				for d := f; d != "/" && d != "."; d = filepath.Dir(d) {
					if ok, _ := filepath.Match(pat, d); ok && !seen[d] {
						seen[d] = true
						out = append(out, d)
					}
				}
			}
			return out, nil
		},
		ldcache: func() map[string][]string { return cache },
	}
}

func TestFindLibraries(t *testing.T) {
	const venv13 = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib"
	const venv12 = "/opt/app/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib"
	cases := []struct {
		name  string
		vars  map[string]string
		cache map[string][]string
		files []string
		spec  libSpec
		want  string
	}{
		{"system driver", nil, nil, []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.1"}, driverSpec, "/usr/lib/x86_64-linux-gnu/libcuda.so.1"},
		{"LD_LIBRARY_PATH first", map[string]string{"LD_LIBRARY_PATH": "/opt/a:/opt/b"},
			nil, []string{"/opt/b/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.12"}, nvrtcSpec, "/opt/b/libnvrtc.so.12"},
		{"CUDA_HOME targets", map[string]string{"CUDA_HOME": "/opt/cuda"},
			nil, []string{"/opt/cuda/targets/x86_64-linux/lib/libcublas.so.13"}, cublasSpec, "/opt/cuda/targets/x86_64-linux/lib/libcublas.so.13"},
		{"newest toolkit", nil, nil, []string{"/usr/local/cuda-12.4/targets/x86_64-linux/lib/libnvrtc.so.12", "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13"},
			nvrtcSpec, "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13"},
		{"python wheel", map[string]string{"VIRTUAL_ENV": "/venv"}, nil, []string{"/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13"},
			cublasSpec, "/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13"},
		{"container driver mount", nil, nil, []string{"/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"},
			driverSpec, "/usr/local/nvidia/lib64/libcuda.so.1"},
		{"container driver mount, lib", nil, nil, []string{"/usr/local/nvidia/lib/libcuda.so.1"}, driverSpec, "/usr/local/nvidia/lib/libcuda.so.1"},
		{"venv under /opt, one folder for CUDA 13", nil, nil, []string{venv13 + "/libnvrtc.so.13"}, nvrtcSpec, venv13 + "/libnvrtc.so.13"},
		{"venv under /opt, a folder per library", nil, nil, []string{venv12 + "/libnvrtc.so.12"}, nvrtcSpec, venv12 + "/libnvrtc.so.12"},
		{"Debian's NVRTC 11.8", nil, nil, []string{"/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2"}, nvrtcSpec, "/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2"},
		{"loader cache", nil, map[string][]string{"libcuda.so.1": {"/opt/drv/libcuda.so.1"}}, []string{"/opt/drv/libcuda.so.1"},
			driverSpec, "/opt/drv/libcuda.so.1"},
		{"loader cache entry gone", nil, map[string][]string{"libcuda.so.1": {"/opt/drv/libcuda.so.1"}}, nil, driverSpec, "libcuda.so.1"},
		{"bare name last", nil, nil, nil, cublasSpec, "libcublas.so.13"},
		{"NCCL of the system", nil, nil, []string{"/usr/lib/x86_64-linux-gnu/libnccl.so.2"}, ncclSpec, "/usr/lib/x86_64-linux-gnu/libnccl.so.2"},
		{"NCCL under CUDA_HOME", map[string]string{"CUDA_HOME": "/opt/cuda"}, nil, []string{"/opt/cuda/lib64/libnccl.so.2"}, ncclSpec, "/opt/cuda/lib64/libnccl.so.2"},
		{"NCCL wheel", map[string]string{"VIRTUAL_ENV": "/venv"}, nil, []string{"/venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2"},
			ncclSpec, "/venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2"},
		{"NCCL in the CUDA 13 wheel", nil, nil, []string{venv13 + "/libnccl.so.2"}, ncclSpec, venv13 + "/libnccl.so.2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, dirs := staged(c.vars, c.cache, c.files...).candidates(c.spec)
			if len(got) == 0 || got[0] != c.want {
				t.Fatalf("candidates %q, want %q first", got, c.want)
			}
			if len(dirs) == 0 {
				t.Fatal("no directories searched")
			}
		})
	}
	// Directories come before the loader cache, which comes before bare names.
	e := staged(nil, map[string][]string{"libnvrtc.so.12": {"/cache/libnvrtc.so.12"}}, "/cache/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.12")
	got, _ := e.candidates(nvrtcSpec)
	want := []string{"/usr/local/cuda/lib64/libnvrtc.so.12", "/cache/libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("candidates %q, want %q", got, want)
	}
}

func TestSOMajor(t *testing.T) {
	for name, want := range map[string]int{"libnvrtc.so.13": 13, "/x/libnvrtc.so.11.2": 11, "libcublas.so.12.4.5.8": 12, "libnvrtc.so": 0, "libcuda.so.1": 1, "nvrtc64_120_0.dll": 0} {
		if got := soMajor(name); got != want {
			t.Errorf("soMajor(%q) = %d, want %d", name, got, want)
		}
	}
}

// A library newer than the driver is skipped by its name, before it is
// loaded; one that does not load is reported with the loader's error.
func TestOpenSpecSkips(t *testing.T) {
	e := staged(nil, nil, "/opt/new/libnvrtc.so.13", "/opt/broken/libnvrtc.so.12")
	e.getenv = func(k string) string {
		if k == "LD_LIBRARY_PATH" {
			return "/opt/new:/opt/broken"
		}
		return ""
	}
	spec := nvrtcSpec
	spec.names = []string{"libnvrtc.so.13", "libnvrtc.so.12"}
	spec.deps = nil
	_, err := e.openSpec(spec, 12, nil)
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("error %v, want a MissingError", err)
	}
	if len(me.Rejected) != 2 || me.Rejected[0].Path != "/opt/new/libnvrtc.so.13" || !strings.Contains(me.Rejected[0].Reason, "CUDA 13 is newer than the driver's CUDA 12") ||
		me.Rejected[1].Path != "/opt/broken/libnvrtc.so.12" || !strings.Contains(me.Rejected[1].Reason, "loading NVRTC") {
		t.Fatalf("rejected %+v", me.Rejected)
	}
	for _, s := range []string{"/opt/new/libnvrtc.so.13 was skipped", "/etc/ld.so.cache", "LD_LIBRARY_PATH", "update the NVIDIA driver"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// A missing NCCL is reported like the other libraries: where it was
// sought and how to install it.
func TestNCCLMissing(t *testing.T) {
	n, err := openNCCL(staged(map[string]string{"LD_LIBRARY_PATH": "/nowhere"}, nil))
	if err == nil {
		t.Skipf("the system loader finds an NCCL (%s)", n.lib.path)
	}
	var me *MissingError
	if !errors.As(err, &me) || me.What != "NCCL" {
		t.Fatalf("error %v, want a MissingError for NCCL", err)
	}
	for _, s := range []string{"NCCL (libnccl.so.2 or libnccl.so) was not found in /nowhere", "apt install libnccl2", "nvidia-nccl-cu12", "LD_LIBRARY_PATH"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// A library found by bare name only (through the system loader) is
// loaded, and its path is the file the loader chose.
func TestOpenBareName(t *testing.T) {
	if _, err := os.Stat("/etc/ld.so.cache"); err != nil {
		t.Skip("no system loader cache (not glibc)")
	}
	spec := libSpec{what: "the C library", names: []string{"libc.so.6"}}
	lib, err := staged(nil, nil).openSpec(spec, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(lib.path) || !strings.HasPrefix(filepath.Base(lib.path), "libc") {
		t.Fatalf("loaded from %q, want the loader's absolute path of libc.so.6", lib.path)
	}
}

// The cache parser agrees with ldconfig's own listing of the same file.
func TestLDCacheMatchesLdconfig(t *testing.T) {
	ldconfig, err := exec.LookPath("ldconfig")
	if err != nil {
		if _, err2 := os.Stat("/sbin/ldconfig"); err2 != nil {
			t.Skip("ldconfig is not installed")
		}
		ldconfig = "/sbin/ldconfig"
	}
	data, err := os.ReadFile(ldCachePath)
	if err != nil {
		t.Skipf("no loader cache: %v", err)
	}
	out, err := exec.Command(ldconfig, "-p").Output()
	if err != nil {
		t.Skipf("ldconfig -p: %v", err)
	}
	// "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1"
	line := regexp.MustCompile(`^\s+(\S+) \(([^)]*)\) => (\S+)$`)
	want := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if tags := strings.Split(m[2], ","); ldCacheArch() == 0x0303 && (len(tags) < 2 || tags[1] != "x86-64") {
			continue
		}
		want[m[1]] = append(want[m[1]], m[3])
	}
	if len(want) == 0 {
		t.Skip("ldconfig -p listed no libraries of this architecture")
	}
	got := parseLDCache(data, ldCacheArch())
	for _, m := range []map[string][]string{got, want} {
		for _, v := range m {
			sort.Strings(v)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed %d names, ldconfig -p lists %d; first differences: %v", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b map[string][]string) []string {
	var d []string
	for k, v := range b {
		if !reflect.DeepEqual(a[k], v) && len(d) < 5 {
			d = append(d, k+": "+strings.Join(a[k], ",")+" vs "+strings.Join(v, ","))
		}
	}
	return d
}

// The format before glibc 2.32 prefixed the new table with an old one.
func TestLDCacheOldPrefix(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("ld.so-1.7.0\x00")
	binary.Write(&b, binary.LittleEndian, uint32(1))               // nlibs
	binary.Write(&b, binary.LittleEndian, [3]uint32{0x0303, 0, 0}) // one old entry
	for b.Len()%8 != 0 {
		b.WriteByte(0)
	}
	newStart := b.Len()
	b.WriteString("glibc-ld.so.cache1.1")
	binary.Write(&b, binary.LittleEndian, uint32(2)) // nlibs
	binary.Write(&b, binary.LittleEndian, uint32(0)) // len_strings
	b.Write(make([]byte, 48-28))
	strs := newStart + 48 + 2*24
	names := []string{"libcuda.so.1\x00", "/opt/x/libcuda.so.1\x00", "libarm.so\x00", "/arm/libarm.so\x00"}
	off := []int{strs}
	for _, n := range names {
		off = append(off, off[len(off)-1]+len(n))
	}
	for i, flags := range []uint32{0x0303, 0x0a03} {
		binary.Write(&b, binary.LittleEndian, flags)
		binary.Write(&b, binary.LittleEndian, uint32(off[2*i]))
		binary.Write(&b, binary.LittleEndian, uint32(off[2*i+1]))
		binary.Write(&b, binary.LittleEndian, uint32(0))
		binary.Write(&b, binary.LittleEndian, uint64(0))
	}
	for _, n := range names {
		b.WriteString(n)
	}
	got := parseLDCache(b.Bytes(), 0x0303)
	if want := map[string][]string{"libcuda.so.1": {"/opt/x/libcuda.so.1"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed %v, want %v", got, want)
	}
	if parseLDCache([]byte("garbage"), 0x0303) != nil || parseLDCache(nil, 0) != nil {
		t.Fatal("garbage parsed as a cache")
	}
}
