// Package plots draws PNG charts: loss curves of training runs, and
// heatmaps of importance scores per layer.
package plots

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Series is one curve: x and y values with a name.
type Series struct {
	Name   string
	X, Y   []float64
	Dashed bool
	Color  int // index into the default palette; series of one run share it
}

// Curves draws series on one chart and writes it as PNG.
func Curves(path, title, xLabel, yLabel string, series []Series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	for _, s := range series {
		if len(s.X) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(s.X))
		for j := range s.X {
			pts[j].X, pts[j].Y = s.X[j], s.Y[j]
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plots: %s: %w", s.Name, err)
		}
		l.Color = plotutil.Color(s.Color)
		l.Width = vg.Points(1.2)
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	p.Legend.Top = true
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// grid adapts a matrix to plotter.GridXYZ (rows are layers).
type grid struct{ v [][]float32 }

func (g grid) Dims() (c, r int)   { return len(g.v[0]), len(g.v) }
func (g grid) Z(c, r int) float64 { return float64(g.v[r][c]) }
func (g grid) X(c int) float64    { return float64(c) }
func (g grid) Y(r int) float64    { return float64(r) }
func (g grid) minMax() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, row := range g.v {
		for _, x := range row {
			lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
		}
	}
	return lo, hi
}

// Heatmaps draws matrices side by side (each row a layer) into one PNG.
func Heatmaps(path string, titles []string, mats [][][]float32) error {
	const w, h = 6 * vg.Inch, 4 * vg.Inch
	img := vgimg.New(w*vg.Length(len(mats)), h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(mats)}
	for i, m := range mats {
		if len(m) == 0 || len(m[0]) == 0 {
			continue
		}
		g := grid{m}
		pal := moreland.SmoothBlueRed()
		lo, hi := g.minMax()
		if hi == lo {
			hi = lo + 1
		}
		pal.SetMin(lo)
		pal.SetMax(hi)
		hm := plotter.NewHeatMap(g, pal.Palette(64))
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s (%.3g to %.3g)", titles[i], lo, hi)
		p.X.Label.Text = "index"
		p.Y.Label.Text = "layer"
		p.BackgroundColor = color.White
		p.Add(hm)
		p.Draw(tiles.At(dc, i, 0))
	}
	return saveCanvas(img, path)
}
