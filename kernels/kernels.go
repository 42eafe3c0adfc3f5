// Package kernels holds the CUDA C sources of the GPU backend. They are
// embedded in the binary and compiled at run time by NVRTC for the GPU at
// hand (see backend/cuda), so building minitron needs no CUDA toolkit.
//
// Every kernel is declared `extern "C" __global__ void
// __launch_bounds__(N) name(...)` with parameters of the kinds listed in
// Kind; Kernels parses the declarations so the Go side can check each
// launch's arguments and block size against them.
package kernels

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

//go:embed *.cu *.cuh
var files embed.FS

// header is included first in the translation unit.
const header = "common.cuh"

// Source returns the whole translation unit: the common header, then every
// .cu file in name order, each preceded by a #line directive so compiler
// messages name the original file and line.
func Source() string {
	var b strings.Builder
	for _, name := range names() {
		data, err := files.ReadFile(name)
		if err != nil {
			panic(err) // embedded; cannot fail
		}
		fmt.Fprintf(&b, "#line 1 \"%s\"\n", name)
		b.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Hash identifies the sources (for the compiled-kernel cache).
func Hash() string {
	h := sha256.Sum256([]byte(Source()))
	return hex.EncodeToString(h[:])
}

func names() []string {
	var out []string
	ents, _ := fs.ReadDir(files, ".")
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".cu") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return append([]string{header}, out...)
}

// Kind is the kind of a kernel parameter as it is passed: a device address
// (8 bytes), a 32-bit int, a 64-bit int, a float32, or a 32-bit unsigned.
type Kind byte

// Parameter kinds.
const (
	Ptr   Kind = 'p'
	Int   Kind = 'i'
	Int64 Kind = 'l'
	Float Kind = 'f'
	Uint  Kind = 'u'
)

// Size returns the size of a parameter of kind k in bytes.
func (k Kind) Size() int {
	if k == Ptr || k == Int64 {
		return 8
	}
	return 4
}

// Kernel is a parsed kernel declaration.
type Kernel struct {
	Name   string
	File   string
	Params []Param
	// MaxThreads is the block size the kernel is compiled for (the first
	// argument of its __launch_bounds__); 0 when it declares none. The compiler keeps the
	// registers of a kernel with bounds N within what N threads may use
	// (64K per block: 64 each for 1024 threads); a launch with more
	// threads fails on the GPU.
	MaxThreads int
}

// Param is one kernel parameter.
type Param struct {
	Name string
	Kind Kind
}

var declRE = regexp.MustCompile(`extern "C" __global__ void\s+(?:__launch_bounds__\(\s*(\d+)\s*(?:,\s*\d+\s*)?\)\s+)?(\w+)\(([^)]*)\)`)

// Kernels parses every kernel declaration, keyed by name.
func Kernels() (map[string]Kernel, error) {
	out := map[string]Kernel{}
	for _, name := range names() {
		data, _ := files.ReadFile(name)
		for _, m := range declRE.FindAllStringSubmatch(string(data), -1) {
			k := Kernel{Name: m[2], File: name}
			if _, dup := out[k.Name]; dup {
				return nil, fmt.Errorf("kernels: %s: kernel %s is declared twice", name, k.Name)
			}
			if m[1] != "" {
				n, err := strconv.Atoi(m[1])
				if err != nil || n < 1 || n > 1024 {
					return nil, fmt.Errorf("kernels: %s: kernel %s: __launch_bounds__(%s) is not a block size from 1 to 1024", name, k.Name, m[1])
				}
				k.MaxThreads = n
			}
			for _, p := range strings.Split(m[3], ",") {
				p = strings.Join(strings.Fields(p), " ")
				if p == "" {
					continue
				}
				kind, pname, err := parseParam(p)
				if err != nil {
					return nil, fmt.Errorf("kernels: %s: kernel %s: %w", name, k.Name, err)
				}
				k.Params = append(k.Params, Param{Name: pname, Kind: kind})
			}
			out[k.Name] = k
		}
	}
	return out, nil
}

func parseParam(p string) (Kind, string, error) {
	i := strings.LastIndexAny(p, " *")
	if i < 0 {
		return 0, "", fmt.Errorf("parameter %q has no type", p)
	}
	typ, name := strings.TrimSpace(strings.TrimPrefix(p[:i+1], "const ")), p[i+1:]
	if strings.Contains(typ, "*") {
		return Ptr, name, nil
	}
	switch typ {
	case "int":
		return Int, name, nil
	case "i64", "long long":
		return Int64, name, nil
	case "float":
		return Float, name, nil
	case "u32", "unsigned", "unsigned int":
		return Uint, name, nil
	}
	return 0, "", fmt.Errorf("parameter %q has type %q, which the launcher cannot pass (use a pointer, int, i64, float or u32)", p, typ)
}
