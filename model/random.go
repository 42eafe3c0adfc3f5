package model

import (
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/diskio"
)

// WriteRandom writes a checkpoint of cfg with random weights (normal with
// the config's initializer_range, norms at their identity) in dtype dt,
// streamed a block at a time, so checkpoints far larger than memory can be
// made for benchmarks and tests.
func WriteRandom(cfg *Config, dir string, dt backend.DType, seed uint64, maxShard int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var es []checkpoints.Entry
	for i, p := range cfg.Params() {
		p, i := p, i
		es = append(es, checkpoints.Entry{Name: p.Name, DType: dt, Shape: p.Shape, Stream: func(w io.Writer) error {
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			const block = 1 << 16
			v := make([]float32, block)
			for n := p.Numel(); n > 0; n -= block {
				k := min(n, block)
				for j := range v[:k] {
					switch {
					case p.Role.IsNorm() && cfg.Arch == Llama && (p.Role == InputNormWeight || p.Role == PostNormWeight || p.Role == FinalNormWeight):
						v[j] = 1
					case p.Role.IsNorm():
						v[j] = 0
					default:
						// A cheap normal: sum of four uniforms, rescaled.
						u := r.Uint64()
						s := float64(u&0xffff) + float64(u>>16&0xffff) + float64(u>>32&0xffff) + float64(u>>48)
						v[j] = float32((s/65536 - 2) * math.Sqrt(3) * cfg.InitializerRange)
					}
				}
				b, err := checkpoints.EncodeFloat32(dt, v[:k])
				if err != nil {
					return err
				}
				if _, err := w.Write(b); err != nil {
					return err
				}
			}
			return nil
		}})
	}
	if _, err := checkpoints.WriteSharded(dir, es, maxShard, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	b, err := cfg.JSON()
	if err != nil {
		return err
	}
	return diskio.WriteFileAtomic(filepath.Join(dir, "config.json"), b)
}
