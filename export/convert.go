package export

import (
	"fmt"
	"path/filepath"

	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// ConvertTorch turns a directory holding a PyTorch checkpoint
// (pytorch_model.bin, or shards with pytorch_model.bin.index.json) and its
// config.json into a safetensors Hugging Face directory at out. Tensors
// stream one at a time from the archives in their own dtype (bf16 stays
// bf16); the pickles are read without running any code. The converted
// checkpoint is checked against the config before out appears.
func ConvertTorch(src, out string, maxShard int64) (int, error) {
	cfgPath := filepath.Join(src, "config.json")
	cfg, err := model.LoadConfig(cfgPath)
	if err != nil {
		return 0, err
	}
	n := 0
	err = diskio.WriteDir(out, false, func(tmp string) error {
		var err error
		if n, err = checkpoints.ConvertTorch(src, tmp, maxShard); err != nil {
			return err
		}
		ts, err := checkpoints.Open(tmp)
		if err != nil {
			return err
		}
		defer ts.Close()
		for _, p := range cfg.Params() {
			info, ok := ts.Info(p.Name)
			if !ok {
				return fmt.Errorf("export: %s has no tensor %q, which its config.json requires", src, p.Name)
			}
			if fmt.Sprint(info.Shape) != fmt.Sprint(p.Shape) {
				return fmt.Errorf("export: %s: tensor %q has shape %v, config.json implies %v", src, p.Name, info.Shape, p.Shape)
			}
		}
		if err := diskio.CopyFile(filepath.Join(src, "config.json"), filepath.Join(tmp, "config.json")); err != nil {
			return err
		}
		_, err = tokenizer.CopyDirFiles(src, tmp)
		return err
	})
	return n, err
}
