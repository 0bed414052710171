#!/usr/bin/env python3
"""Checks `rsi lineage --json` views against a run's own files, recomputing the pruning rules here
(runtime/src/lineage_view.h) from models.tsv and the newest gen-*.h5's population: every selected
model drawn or folded exactly once, rows covering the generations in order, a drawn model live (itself
or a descendant in the final population or on the best path, or a mate of a path model), at most 36
models per generation row and 24 generation rows, every edge from where the child's parent is, and
the selections of --best-path, --population, --last K. Also bounds the SVGs to 4000 pt a side.
Used by tests/integration/lineage_scale.sh:
    python3 lineage_view_check.py DIR RUN   (DIR holds default.json, best-path.json, population.json,
                                             last5.json, best-path-last10.json, best-path-all.json,
                                             lineage.svg, best-path.svg)"""
import csv, glob, json, re, sys

import h5py

MAX_PER_ROW, MAX_ROWS, BOUND_PT = 36, 24, 4000
out_dir, run = sys.argv[1:3]
models = {}
for row in csv.DictReader(open(f'{run}/models.tsv'), delimiter='\t'):
    parents = [] if row['parents'] == '-' else [int(p) for p in row['parents'].split(',')]
    models[int(row['id'])] = {'gen': int(row['generation']), 'parents': parents, 'status': row['status']}
generation_rows = list(csv.DictReader(open(f'{run}/generations.tsv'), delimiter='\t'))
generations = [int(g['generation']) for g in generation_rows]
best = int(generation_rows[-1]['best_id'])
newest = max(f for f in glob.glob(f'{run}/gen-*.h5') if re.search(r'gen-\d+\.h5$', f))
with h5py.File(newest, 'r') as f:
    population = {int(i) for i in f.attrs['population']}


def ancestors(roots):
    out, todo = set(), list(roots)
    while todo:
        i = todo.pop()
        if i in models and i not in out:
            out.add(i)
            todo += models[i]['parents']
    return out


path, i = set(), best
while i in models and i not in path:
    path.add(i)
    i = models[i]['parents'][0] if models[i]['parents'] else None
mates = {p for m in path for p in models[m]['parents'][1:] if p in models} - path
live = ancestors(population | path) | mates
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def holds(node, model):
    return node.get('model') == model if node['kind'] == 'model' else model in node['models']


def common(name, view, selected):
    """What every view keeps: each selected model once, rows in order, nodes true to the run, valid edges."""
    nodes = {n['id']: n for n in view['nodes']}
    drawn = [n['model'] for n in view['nodes'] if n['kind'] == 'model']
    folded = [m for n in view['nodes'] if n['kind'] != 'model' for m in n['models']]
    check(sorted(drawn + folded) == sorted(selected),
          f'{name}: {len(drawn)} drawn + {len(folded)} folded models are not the {len(selected)} selected')
    check((view['selected'], view['drawn'], view['folded']) == (len(selected), len(drawn), len(folded)),
          f'{name}: the counts selected/drawn/folded disagree with the nodes')
    covered = [g for r in view['rows'] for g in generations if r['first_generation'] <= g <= r['last_generation']]
    check(covered == generations, f'{name}: the rows do not cover every generation once, in order')
    for r in view['rows']:
        in_row = [nodes[k] for k in r['nodes']]
        for n in in_row:
            gens = [models[n['model']]['gen']] if n['kind'] == 'model' else [models[m]['gen'] for m in n['models']]
            check(all(r['first_generation'] <= g <= r['last_generation'] for g in gens),
                  f'{name}: node {n["id"]} holds a model outside its row {r["first_generation"]}..{r["last_generation"]}')
        drawn_here = sum(n['kind'] == 'model' for n in in_row)
        check(not r['folded'] or drawn_here == 0, f'{name}: a folded row draws models')
        check(view['view']['all'] or drawn_here <= MAX_PER_ROW,
              f'{name}: generation {r["first_generation"]} draws {drawn_here} models, above {MAX_PER_ROW}')
        check(sum(n['kind'] == 'others' for n in in_row) <= 1, f'{name}: a row with two "+N others" nodes')
    check(view['view']['all'] or sum(not r['folded'] for r in view['rows']) <= MAX_ROWS,
          f'{name}: more than {MAX_ROWS} generation rows')
    for n in view['nodes']:
        if n['kind'] != 'model':
            continue
        m = models[n['model']]
        check((n['generation'], n['parents'], n['status']) == (m['gen'], m['parents'], m['status']),
              f'{name}: model {n["model"]} differs from models.tsv')
        check(n['on_best_path'] == (n['model'] in path) and n['in_population'] == (n['model'] in population),
              f'{name}: model {n["model"]}: on_best_path/in_population wrong')
    for e in view['edges']:
        src, dst = nodes.get(e['from']), nodes.get(e['to'])
        if src is None or dst is None or dst['kind'] != 'model':
            problems.append(f'{name}: edge {e} does not end at a drawn model')
            continue
        parents = models[dst['model']]['parents']
        candidates = parents[:1] if e['kind'] == 'parent' else parents[1:]
        check(any(holds(src, p) for p in candidates), f'{name}: edge {e} does not come from the child\'s parent')
    return nodes, set(drawn)


def load(name):
    return json.load(open(f'{out_dir}/{name}.json'))


# The default view: every model, dead branches folded, rows bounded.
view = load('default')
nodes, drawn = common('default', view, list(models))
check(drawn <= live, f'default: {len(drawn - live)} dead-branch models drawn, e.g. {sorted(drawn - live)[:5]}')
for r in view['rows']:
    if r['folded']:
        continue
    g = r['first_generation']
    live_here = {m for m in live if models[m]['gen'] == g}
    drawn_here = {m for m in drawn if models[m]['gen'] == g}
    if len(live_here) <= MAX_PER_ROW:
        check(drawn_here == live_here, f'default: generation {g} draws {len(drawn_here)} of its {len(live_here)} live models')
    else:
        check(len(drawn_here) == MAX_PER_ROW and {m for m in path if models[m]['gen'] == g} <= drawn_here,
              f'default: generation {g} ({len(live_here)} live) does not draw {MAX_PER_ROW} with the path first')
gen_rows = [r for r in view['rows'] if not r['folded']]
check(len(generations) <= MAX_ROWS or (len(gen_rows) == MAX_ROWS and view['rows'][4]['folded']),
      f'default: {len(gen_rows)} generation rows for {len(generations)} generations (expected 4 + folded + 20)')
check(f'm{best}' in nodes or any(r['folded'] and r['first_generation'] <= models[best]['gen'] <= r['last_generation']
                                 for r in view['rows']), f'default: the best model {best} is missing')
others = [n for n in view['nodes'] if n['kind'] == 'others']
check(others, 'default: no "+N others" node in a 10,000-model run')

# --best-path: the best model's first-parent line and its mates, nothing else (all of them ancestors).
for name in ('best-path', 'best-path-last10', 'best-path-all'):
    v = load(name)
    _, d = common(name, v, sorted(path | mates))
    check(path | mates <= ancestors([best]), f'{name}: a model that is not an ancestor of the best')
    check(not any(n['kind'] == 'others' for n in v['nodes']), f'{name}: a path model was folded as a dead branch')
check(len(load('best-path-all')['rows']) == len(generations), 'best-path-all: --all still folds generations')
check(load('best-path-all')['drawn'] == len(path | mates), 'best-path-all: not every path model drawn')

# --population: the final population and all its ancestors.
common('population', load('population'), sorted(ancestors(population)))

# --last K: the generations before the last K folded into one node.
for name, k, selected in (('last5', 5, list(models)), ('best-path-last10', 10, sorted(path | mates))):
    v = load(name)
    common(name, v, selected)
    first = v['rows'][0]
    check(first['folded'] and first['last_generation'] == generations[-k - 1] and len(v['rows']) == k + 1,
          f'{name}: expected one folded row up to generation {generations[-k - 1]}, then {k} rows')
    earlier = [n for n in v['nodes'] if n['kind'] == 'earlier']
    check(len(earlier) == 1 and earlier[0]['count'] == sum(models[m]['gen'] <= generations[-k - 1] for m in selected),
          f'{name}: the "earlier models" node does not hold every selected model before the cut')

sizes = []
for svg in ('lineage', 'best-path'):
    w, h = (float(x) for x in re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"',
                                        open(f'{out_dir}/{svg}.svg').read()).groups())
    sizes.append(f'{svg} {w:.0f} x {h:.0f} pt')
    check(w <= BOUND_PT and h <= BOUND_PT, f'{svg}.svg is {w:.0f} x {h:.0f} pt, above {BOUND_PT} pt')
print(f'   views: default {view["drawn"]} drawn + {view["folded"]} folded in {len(view["rows"])} rows; '
      f'best path {len(path)} + {len(mates)} mates; population + ancestors {len(ancestors(population))}; '
      f'svg {", ".join(sizes)}')
if problems:
    sys.exit('FAIL: ' + '\n      '.join(problems[:20]))
