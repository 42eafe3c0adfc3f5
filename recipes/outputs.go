package recipes

import (
	"path/filepath"

	"github.com/minitron/minitron/train"
)

// Where each stage writes, under the run directory r.Out (the steps' stages:
// scoresPath, prunedDir, distillDir, studentDir).
func (r *Recipe) datasetDir(name string) string { return filepath.Join(r.Out, "data", name) }
func (r *Recipe) reportPath() string            { return filepath.Join(r.Out, "eval", "report.json") }
func (r *Recipe) exportDir() string             { return filepath.Join(r.Out, "export") }

// exportPath is where export format f ("hf" or "gguf") writes.
func (r *Recipe) exportPath(f string) string {
	if f == "gguf" {
		return filepath.Join(r.exportDir(), r.Name+"-"+r.Export.GGUFDType+".gguf")
	}
	return filepath.Join(r.exportDir(), f)
}

// Output is one result of a run and where it is.
type Output struct {
	Stage, What, Path string
}

// Outputs lists where a run of the recipe puts its results, in stage
// order.
func (r *Recipe) Outputs() []Output {
	var out []Output
	for _, d := range r.Data.Datasets {
		if d.Path == "" {
			out = append(out, Output{"data", "dataset " + d.Name, r.datasetDir(d.Name)})
		}
	}
	if r.TeacherCorrection.Enabled {
		out = append(out, Output{KindTeacherCorrection, "corrected teacher", filepath.Join(r.correctionDir(), train.FinalDir)})
	}
	for i := range r.Steps {
		out = append(out,
			Output{r.stepStage(i, KindImportance), "importance scores", r.scoresPath(i)},
			Output{r.stepStage(i, KindPrune), "pruned student", r.prunedDir(i)},
			Output{r.stepStage(i, KindDistill), "distillation run (metrics.jsonl, config.yaml, checkpoints)", r.distillDir(i)},
			Output{r.stepStage(i, KindDistill), "distilled student", r.studentDir(i)})
	}
	out = append(out, Output{KindEval, "evaluation report", r.reportPath()})
	for _, f := range r.Export.Formats {
		what := map[string]string{"hf": "Hugging Face directory", "gguf": "GGUF file for llama.cpp"}[f]
		out = append(out, Output{"export", what, r.exportPath(f)})
	}
	return out
}
