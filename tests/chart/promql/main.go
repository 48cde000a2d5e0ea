// Command promql-names parses PromQL expressions with Prometheus' own parser
// (github.com/prometheus/prometheus/promql/parser) and prints the metric names
// each one selects. Used by tests/chart/test_dashboard.py to check that the
// chart's Grafana dashboard asks only for metrics billing exports.
//
// Input (stdin): a JSON array of expressions. Output (stdout): a JSON array,
// one object per expression, {"expr": ..., "names": [...], "labels": [...]}
// or {"expr": ..., "error": "..."}. "names" are the metric names its selectors
// select; "labels" the label names it matches on or groups by (selector
// matchers other than __name__, by/without, on/ignoring, group_left/right). A
// selector without a literal metric name (such as {__name__=~"billing_.*"}) is
// an error too, since its names cannot be checked. Exit status 1 if any
// expression failed, 2 on bad input.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr   string   `json:"expr"`
	Names  []string `json:"names,omitempty"`
	Labels []string `json:"labels,omitempty"`
	Error  string   `json:"error,omitempty"`
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func analyse(p parser.Parser, expr string) (names, labelNames []string, err error) {
	ast, err := p.ParseExpr(expr)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	used := map[string]bool{}
	addAll := func(ls []string) {
		for _, l := range ls {
			used[l] = true
		}
	}
	var bad error
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.AggregateExpr:
			addAll(n.Grouping)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				addAll(n.VectorMatching.MatchingLabels)
				addAll(n.VectorMatching.Include)
			}
		}
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				used[m.Name] = true
			}
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s has no literal metric name", vs.String())
			return nil
		}
		seen[name] = true
		return nil
	})
	if bad != nil {
		return nil, nil, bad
	}
	if len(seen) == 0 {
		return nil, nil, fmt.Errorf("selects no metric")
	}
	return sorted(seen), sorted(used), nil
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-names: stdin is not a JSON array of strings: %v\n", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	results := make([]result, 0, len(exprs))
	failed := false
	for _, e := range exprs {
		r := result{Expr: e}
		if n, l, err := analyse(p, e); err != nil {
			r.Error = err.Error()
			failed = true
		} else {
			r.Names, r.Labels = n, l
		}
		results = append(results, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "promql-names: %v\n", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
