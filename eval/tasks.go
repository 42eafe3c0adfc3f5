package eval

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// The benchmarks are built as lm-evaluation-harness v0.4.8 (commit
// 6d2abda4) builds them: its task YAMLs lm_eval/tasks/{hellaswag,
// winogrande,arc,mmlu/default,humaneval}, the few-shot samplers of
// lm_eval/api/samplers.py, ConfigurableTask.fewshot_context and
// construct_requests in lm_eval/api/task.py, and HFLM's request encoding
// in lm_eval/models/huggingface.py. Every doc_to_text, doc_to_target and
// doc_to_choice below cites the definition it follows.

// Task describes a benchmark.
type Task struct {
	Name string
	// Dataset is the Hugging Face dataset (and configuration) the files
	// come from.
	Dataset string
	// Fields are the fields each row must have.
	Fields []string
	// EvalSplit is the split scored; FewshotSplit the one few-shot
	// examples come from ("" when the task is zero-shot only).
	EvalSplit, FewshotSplit string
	// Shots is the papers' few-shot setting (the default of --num-fewshot).
	Shots int
	// FirstN takes the first examples of the few-shot split (MMLU's
	// first_n sampler) instead of drawing them at random.
	FirstN bool
	// Exclude draws one example more and drops the evaluated document if
	// it is among them: the harness does so when the task names no
	// fewshot_split and no test_split (they compare equal, both None).
	Exclude bool
	// AccNorm is reported besides acc.
	AccNorm bool
	// Generate marks HumanEval: generation and execution, not likelihoods.
	Generate bool

	parse func(e rowErr, r Row) (example, error)
}

// FewshotSeed seeds the few-shot sampler: the harness's default
// fewshot_random_seed, which resets each task's random.Random.
const FewshotSeed = 1234

// tasks are the benchmarks by name (LookupTask).
var tasks = map[string]*Task{
	"mmlu": {Name: "mmlu", Dataset: "cais/mmlu (the all folder, or one subject's)", Fields: []string{"question", "subject", "choices", "answer"},
		EvalSplit: "test", FewshotSplit: "dev", Shots: 5, FirstN: true, parse: parseMMLU},
	"hellaswag": {Name: "hellaswag", Dataset: "Rowan/hellaswag", Fields: []string{"activity_label", "ctx_a", "ctx_b", "endings", "label"},
		EvalSplit: "validation", FewshotSplit: "train", Shots: 10, Exclude: true, AccNorm: true, parse: parseHellaSwag},
	"winogrande": {Name: "winogrande", Dataset: "allenai/winogrande (winogrande_xl)", Fields: []string{"sentence", "option1", "option2", "answer"},
		EvalSplit: "validation", FewshotSplit: "train", Shots: 5, Exclude: true, parse: parseWinogrande},
	"arc_challenge": {Name: "arc_challenge", Dataset: "allenai/ai2_arc (ARC-Challenge)", Fields: []string{"question", "choices", "answerKey"},
		EvalSplit: "test", FewshotSplit: "train", Shots: 25, AccNorm: true, parse: parseARC},
	"arc_easy": {Name: "arc_easy", Dataset: "allenai/ai2_arc (ARC-Easy)", Fields: []string{"question", "choices", "answerKey"},
		EvalSplit: "test", FewshotSplit: "train", Shots: 0, AccNorm: true, parse: parseARC},
	"humaneval": {Name: "humaneval", Dataset: "openai/openai_humaneval", Fields: []string{"task_id", "prompt", "canonical_solution", "test", "entry_point"},
		EvalSplit: "test", Shots: 0, Generate: true},
}

// taskNames lists the benchmarks in the order of the papers' tables.
var taskNames = []string{"winogrande", "arc_challenge", "arc_easy", "mmlu", "hellaswag", "humaneval"}

// LookupTask returns the benchmark of that name (a copy: the table itself
// does not change).
func LookupTask(name string) (*Task, bool) {
	t, ok := tasks[name]
	if !ok {
		return nil, false
	}
	c := *t
	return &c, true
}

// TaskNames lists the benchmarks in the order of the papers' tables.
func TaskNames() []string { return slices.Clone(taskNames) }

// example is a parsed row: what doc_to_text, doc_to_choice and
// doc_to_target give.
type example struct {
	text    string   // doc_to_text (unused when multi)
	choices []string // doc_to_choice
	gold    int
	// multi: the choices are contexts and target the shared continuation
	// (Winogrande's partial scoring).
	multi   bool
	target  string
	subject string // MMLU
}

// shot renders a few-shot example as the sampler's get_context does:
// question, target delimiter " ", answer, fewshot delimiter "\n\n". The
// answer is appended only when doc_to_target is not "" (an index always
// passes; Winogrande's string target may not).
func (e example) shot() string {
	if e.multi {
		if e.target == "" {
			return e.choices[e.gold]
		}
		return e.choices[e.gold] + " " + e.target + "\n\n"
	}
	return e.text + " " + e.choices[e.gold] + "\n\n"
}

// hellaswag/utils.py process_docs: query = preprocess(activity_label + ": "
// + ctx_a + " " + ctx_b.capitalize()), choices = preprocess(ending) each,
// gold = int(label); hellaswag.yaml: doc_to_text "{{query}}", doc_to_choice
// "choices", doc_to_target "{{label}}".
func parseHellaSwag(e rowErr, r Row) (example, error) {
	var x example
	f, err := e.strings(r, "activity_label", "ctx_a", "ctx_b")
	if err != nil {
		return x, err
	}
	label, a, b := f[0], f[1], f[2]
	ends, err := e.strs(r, "endings")
	if err != nil {
		return x, err
	}
	gold, err := labelIndex(e, r, "label", len(ends))
	if err != nil {
		return x, err
	}
	x.text = hellaswagPreprocess(label + ": " + a + " " + pyCapitalize(b))
	for _, end := range ends {
		x.choices = append(x.choices, hellaswagPreprocess(end))
	}
	x.gold = gold
	return x, nil
}

// labelIndex reads a label given as a digit string (HellaSwag's "2") or a
// number.
func labelIndex(e rowErr, r Row, field string, n int) (int, error) {
	var i int
	if s, ok := r[field].(string); ok {
		if _, err := fmt.Sscanf(s, "%d", &i); err != nil || fmt.Sprint(i) != s {
			return 0, e.errorf(field, "%q is not a choice index (an empty label marks an unlabeled split: evaluate the validation split)", s)
		}
	} else {
		var err error
		if i, err = e.integer(r, field); err != nil {
			return 0, err
		}
	}
	if i < 0 || i >= n {
		return 0, e.errorf(field, "%d is outside the %d choices", i, n)
	}
	return i, nil
}

// winogrande/preprocess_winogrande.py: doc_to_text = {"1": 0, "2": 1}[answer]
// (an index: multiple inputs), doc_to_choice = sentence[:idx] + option for
// each option, doc_to_target = sentence[idx+1:].strip(), idx the index of
// the first "_".
func parseWinogrande(e rowErr, r Row) (example, error) {
	var x example
	f, err := e.strings(r, "sentence", "option1", "option2", "answer")
	if err != nil {
		return x, err
	}
	s, o1, o2, ans := f[0], f[1], f[2], f[3]
	idx := strings.IndexByte(s, '_')
	if idx < 0 {
		return x, e.errorf("sentence", "has no blank \"_\"")
	}
	switch ans {
	case "1":
		x.gold = 0
	case "2":
		x.gold = 1
	default:
		return x, e.errorf("answer", "%q: want \"1\" or \"2\" (the test split is unlabeled: evaluate the validation split)", ans)
	}
	x.multi = true
	x.choices = []string{s[:idx] + o1, s[:idx] + o2}
	x.target = pyStrip(s[idx+1:])
	return x, nil
}

// arc/arc_easy.yaml: doc_to_text "Question: {{question}}\nAnswer:",
// doc_to_choice "{{choices.text}}", doc_to_target
// "{{choices.label.index(answerKey)}}".
func parseARC(e rowErr, r Row) (example, error) {
	var x example
	q, err := e.str(r, "question")
	if err != nil {
		return x, err
	}
	ch, ok := r["choices"].(map[string]any)
	if !ok {
		if _, has := r["choices"]; !has {
			return x, e.errorf("choices", "missing (fields: %s)", fieldNames(r))
		}
		return x, e.errorf("choices", "is %T, want {\"text\": [...], \"label\": [...]}", r["choices"])
	}
	texts, err := e.asStrings("choices.text", ch["text"])
	if err != nil {
		return x, err
	}
	labels, err := e.asStrings("choices.label", ch["label"])
	if err != nil {
		return x, err
	}
	key, err := e.str(r, "answerKey")
	if err != nil {
		return x, err
	}
	if len(texts) != len(labels) || len(texts) < 2 {
		return x, e.errorf("choices", "%d texts and %d labels", len(texts), len(labels))
	}
	x.gold = -1
	for i, l := range labels {
		if l == key {
			x.gold = i
			break
		}
	}
	if x.gold < 0 {
		return x, e.errorf("answerKey", "%q is not among the labels %v", key, labels)
	}
	x.text = "Question: " + q + "\nAnswer:"
	x.choices = texts
	return x, nil
}

// mmlu/default/_default_template_yaml: doc_to_text "{{question.strip()}}\nA.
// {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD.
// {{choices[3]}}\nAnswer:", doc_to_choice ["A", "B", "C", "D"],
// doc_to_target answer; each subject's description is "The following are
// multiple choice questions (with answers) about SUBJECT.\n\n" with the
// subject's underscores as spaces (checked against all 57 subject YAMLs).
func parseMMLU(e rowErr, r Row) (example, error) {
	var x example
	f, err := e.strings(r, "question", "subject")
	if err != nil {
		return x, err
	}
	q, subj := f[0], f[1]
	ch, err := e.strs(r, "choices")
	if err != nil {
		return x, err
	}
	if len(ch) != 4 {
		return x, e.errorf("choices", "%d choices; MMLU questions have 4", len(ch))
	}
	ans, err := e.integer(r, "answer")
	if err != nil {
		return x, err
	}
	if ans < 0 || ans > 3 {
		return x, e.errorf("answer", "%d is outside 0..3", ans)
	}
	x.text = pyStrip(q) + "\nA. " + ch[0] + "\nB. " + ch[1] + "\nC. " + ch[2] + "\nD. " + ch[3] + "\nAnswer:"
	x.choices = []string{"A", "B", "C", "D"}
	x.gold = ans
	x.subject = subj
	return x, nil
}

func mmluDescription(subject string) string {
	return "The following are multiple choice questions (with answers) about " + strings.ReplaceAll(subject, "_", " ") + ".\n\n"
}

// Doc is one evaluated document and its requests, one per choice.
type Doc struct {
	Index    int // in the evaluated split
	Subject  string
	Requests []Request
	Gold     int
	// ChoiceChars are the lengths in characters of the choices, by which
	// acc_norm divides the log-likelihoods (len(choice) in Python).
	ChoiceChars []int
}

// Request is one log-likelihood to compute: the continuation's given the
// context.
type Request struct {
	Task         string `json:"task"`
	Doc          int    `json:"doc"`
	Choice       int    `json:"choice"`
	Context      string `json:"context"`
	Continuation string `json:"continuation"`
}

// BuildOptions choose the documents and shots.
type BuildOptions struct {
	Shots int // -1: the task's default
	// Limit keeps the first Limit documents (0: all); for MMLU, the first
	// Limit of each subject, as the harness limits each subject's task.
	Limit int
}

// Build reads a task's data and builds its documents' requests.
func (t *Task) Build(ctx context.Context, d *Dataset, opt BuildOptions) ([]Doc, error) {
	if t.Generate {
		return nil, fmt.Errorf("eval: %s generates code; it has no multiple-choice requests", t.Name)
	}
	shots := opt.Shots
	if shots < 0 {
		shots = t.Shots
	}
	if shots > 0 && t.FewshotSplit == "" {
		return nil, fmt.Errorf("eval: %s has no few-shot split; use --num-fewshot 0", t.Name)
	}
	if shots > 0 && d.Single() {
		return nil, fmt.Errorf("eval: %s: %d-shot %s draws its examples from the %s split; %s is one file: give the folder holding its %s* files, or --num-fewshot 0",
			t.Name, shots, t.Name, t.FewshotSplit, d.Path, t.FewshotSplit)
	}
	evs, err := d.Split(ctx, t.EvalSplit)
	if err != nil {
		return nil, err
	}
	evx, err := t.parseSplit(d, evs)
	if err != nil {
		return nil, err
	}
	var fss *Split
	var fsx []example
	if shots > 0 {
		if fss, err = d.Split(ctx, t.FewshotSplit); err != nil {
			return nil, err
		}
		if fsx, err = t.parseSplit(d, fss); err != nil {
			return nil, err
		}
		if !t.FirstN && len(fsx) < shots+1 {
			return nil, fmt.Errorf("eval: %s: the %s split has %d rows, too few for %d-shot", t.Name, t.FewshotSplit, len(fsx), shots)
		}
	}
	// MMLU: few-shot examples by subject, in file order.
	bySubject := map[string][]example{}
	if t.FirstN {
		for _, x := range fsx {
			bySubject[x.subject] = append(bySubject[x.subject], x)
		}
	}
	rnd := newPyRandom(FewshotSeed)
	perSubject := map[string]int{}
	var docs []Doc
	for i, x := range evx {
		if opt.Limit > 0 {
			key := ""
			if t.FirstN {
				key = x.subject
			}
			if perSubject[key] >= opt.Limit {
				continue
			}
			perSubject[key]++
		}
		prefix := ""
		if t.FirstN {
			prefix = mmluDescription(x.subject)
		}
		if shots > 0 {
			switch {
			case t.FirstN:
				ex := bySubject[x.subject]
				if len(ex) < shots {
					return nil, fmt.Errorf("eval: %s: subject %q has %d examples in the %s split, fewer than %d shots", t.Name, x.subject, len(ex), t.FewshotSplit, shots)
				}
				for _, e := range ex[:shots] {
					prefix += e.shot()
				}
			case t.Exclude:
				n := 0
				for _, j := range rnd.sample(len(fsx), shots+1) {
					if n == shots || fss.keys[j] == evs.keys[i] {
						continue
					}
					prefix += fsx[j].shot()
					n++
				}
			default:
				for _, j := range rnd.sample(len(fsx), shots) {
					prefix += fsx[j].shot()
				}
			}
		}
		doc := Doc{Index: i, Subject: x.subject, Gold: x.gold}
		for c, choice := range x.choices {
			rq := Request{Task: t.Name, Doc: i, Choice: c}
			if x.multi {
				rq.Context, rq.Continuation = prefix+choice, " "+x.target
			} else {
				rq.Context, rq.Continuation = prefix+x.text, " "+choice
			}
			doc.Requests = append(doc.Requests, rq)
			doc.ChoiceChars = append(doc.ChoiceChars, utf8.RuneCountInString(choice))
		}
		docs = append(docs, doc)
	}
	return docs, nil
}

func (t *Task) parseSplit(d *Dataset, s *Split) ([]example, error) {
	where := d.Path
	if s.Name != "" {
		where += " (" + s.Name + " split)"
	}
	out := make([]example, len(s.Rows))
	for i, r := range s.Rows {
		x, err := t.parse(rowErr{where: where, row: i}, r)
		if err != nil {
			return nil, err
		}
		out[i] = x
	}
	return out, nil
}

// Subjects returns the sorted distinct subjects of docs.
func Subjects(docs []Doc) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range docs {
		if !seen[d.Subject] {
			seen[d.Subject] = true
			out = append(out, d.Subject)
		}
	}
	sort.Strings(out)
	return out
}
