package train

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minitron/minitron/config"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/model"
)

// extendable are the keys a resumed run may change: its length and the
// cadence of logs, validations and checkpoints. Every other setting
// changes what the run computes.
var extendable = map[string]bool{"train.steps": true, "train.tokens": true, "train.log_every": true,
	"checkpoint.every": true, "checkpoint.keep": true, "eval.every": true}

// trainKeys are the top-level keys of Config.
var trainKeys = map[string]bool{"model": true, "data": true, "train": true, "optimizer": true, "eval": true, "checkpoint": true, "device": true}

// identities returns the identities of the starting point (the checkpoint
// directory, or the config.json of fresh weights) and of the datasets
// (their shards' checksums, from the manifests) with the caller's.
func identities(cfg *Config, extra map[string]string) (map[string]string, error) {
	ids := map[string]string{}
	for k, v := range extra {
		ids[k] = v
	}
	if p := cfg.Model.Checkpoint; p != "" {
		id, err := model.DirIdentity(p)
		if err != nil {
			return nil, err
		}
		ids["model.checkpoint"] = id
	}
	if p := cfg.Model.Config; p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		sum := sha256.Sum256(b)
		ids["model.config"] = hex.EncodeToString(sum[:])
	}
	for i, d := range cfg.Data.Datasets {
		m, err := data.ReadManifest(d.Path)
		if err != nil {
			return nil, err
		}
		var sums []string
		for _, s := range m.Shards {
			sums = append(sums, s.SHA256)
		}
		ids[fmt.Sprintf("data.datasets[%d].path", i)] = strings.Join(sums, ",")
	}
	return ids, nil
}

// checkResume refuses to resume the run saved in dir (state st, its
// settings saved beside it) with settings that change its result: any
// key but the extendable ones, or an input whose identity changed. The
// error names each key with its old and new value.
func checkResume(cfg *Config, opt RunOptions, st *State, dir string, settings []byte, ids map[string]string) error {
	name := opt.KeyName
	if name == nil {
		name = func(k string) string { return k }
	}
	saved, err := os.ReadFile(filepath.Join(dir, "training.yaml"))
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	changes, err := config.Diff(saved, settings, func(k string) bool { return extendable[k] })
	if err != nil {
		return fmt.Errorf("train: %s: %w", filepath.Join(dir, "training.yaml"), err)
	}
	// The training keys are compared through the fingerprint, which knows
	// which older spellings of a setting are the same run; the others
	// (a distillation's teacher and loss) key by key.
	sameTraining := cfg.resumes(st.Fingerprint)
	var lines []string
	changed := map[string]bool{}
	for _, c := range changes {
		head, _, _ := strings.Cut(c.Key, ".")
		if trainKeys[head] && sameTraining {
			continue
		}
		if old, ok := st.Identities[c.Key]; ok && ids[c.Key] == old {
			continue // moved, but the same (a teacher's weights)
		}
		changed[c.Key] = true
		lines = append(lines, fmt.Sprintf("%s: %s (the run's) → %s (now)", name(c.Key), c.Old, c.New))
	}
	var keys []string
	for k := range st.Identities {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if now, ok := ids[k]; ok && now != st.Identities[k] && !changed[k] {
			lines = append(lines, fmt.Sprintf("%s: the same path, but not the same content as when the run started", name(k)))
		}
	}
	if !sameTraining && strings.Contains(string(saved), "decay_norms_and_embeddings:") {
		lines = append(lines, "the run was started before optimizer.decay existed: to resume it, set optimizer.decay: no_embeddings (what decay_norms_and_embeddings: false did) or all (true)")
	} else if len(lines) == 0 && !sameTraining {
		lines = append(lines, "a setting this version reads differently from the one that started the run")
	}
	if len(lines) == 0 {
		return nil
	}
	newRun := opt.NewRun
	if newRun == "" {
		newRun = "choose another output directory"
	}
	return fmt.Errorf("train: %s holds a run with other settings:\n  %s\nits settings are in %s; to resume it, undo the changes (only %s may change); to start a new run with them, %s",
		opt.Out, strings.Join(lines, "\n  "), filepath.Join(opt.Out, "config.yaml"), extendableList(name), newRun)
}

func extendableList(name func(string) string) string {
	var ks []string
	for k := range extendable {
		ks = append(ks, name(k))
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}
