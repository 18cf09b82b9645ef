#!/usr/bin/env python3
"""bench/tokenizer_hf.py - Hugging Face side of the tokenizer tests and benchmark.

  ref   --corpus C --out F NAME=DIR...   reference ids/texts of every corpus text, from Python
        `tokenizers` (tokenizer.json), transformers' AutoTokenizer (tokenizer_config applied:
        add_bos_token, clean_up_tokenization_spaces) and, for folders with tokenizer.model,
        sentencepiece and the slow (sentencepiece-backed) LlamaTokenizer; one JSON file.
  bench --corpus DOCS --lunar L NAME=DIR...   HF `tokenizers` encode throughput on the documents
        bench/tokenizer_bench.c wrote, single-threaded and on all cores, printed beside lunar's
        figures (L: its --json lines). Each measurement runs in its own process so that
        RAYON_NUM_THREADS=1 really pins HF to one thread.
  run   DIR DOCS           (internal) one measurement process.
  variants --spec tests/fixtures/tokenizer/variants.json --root R   builds R/v_<name>/tokenizer.json
        from R/<base>/tokenizer.json for each synthetic variant (as test_tokenizer.c does).

Token counts and an id checksum (h = h*1000003 + id + 1 mod 2^64 over all ids in order) are
printed for both sides: equal checksums mean identical ids on the whole 10 MB corpus.
"""
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def pairs(args):
    out = []
    for a in args:
        name, _, d = a.partition("=")
        out.append((name, d) if d else (os.path.basename(a.rstrip("/")), a))
    return out


def checksum(list_of_ids):
    h = 0
    for ids in list_of_ids:
        for i in ids:
            h = (h * 1000003 + i + 1) & 0xFFFFFFFFFFFFFFFF
    return h


def block(enc, dec0, corpus):
    def dec(ids, s):
        try:
            return dec0(ids, s)
        except BaseException:  # noqa: BLE001 - HF's Strip decoder panics on an empty string
            return None
    r = {"ids": [], "ids_plain": [], "decoded": [], "decoded_skip": []}
    for t in corpus:
        a, b = enc(t, True), enc(t, False)
        r["ids"].append(a)
        r["ids_plain"].append(b)
        r["decoded"].append(dec(b, False))
        r["decoded_skip"].append(dec(a, True))
    return r


def ref(corpus_path, out, items):
    import tokenizers
    import transformers
    corpus = [c["text"] for c in json.load(open(corpus_path, encoding="utf-8"))]
    res = {"versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__}}
    try:
        import sentencepiece
        res["versions"]["sentencepiece"] = sentencepiece.__version__
    except Exception as e:  # noqa: BLE001
        res["versions"]["sentencepiece"] = repr(e)
    for name, d in items:
        e = {}
        t0 = time.time()
        tj = os.path.join(d, "tokenizer.json")
        if os.path.exists(tj):
            tk = tokenizers.Tokenizer.from_file(tj)
            e["tokenizers"] = block(lambda t, s: tk.encode(t, add_special_tokens=s).ids,
                                    lambda ids, s: tk.decode(ids, skip_special_tokens=s), corpus)
        try:
            if name.startswith("v_"):
                raise RuntimeError("synthetic variant: no tokenizer_config, tokenizers is the reference")
            tf = transformers.AutoTokenizer.from_pretrained(d)
            e["transformers_class"] = type(tf).__name__
            e["transformers"] = block(lambda t, s: tf.encode(t, add_special_tokens=s),
                                      lambda ids, s: tf.decode(ids, skip_special_tokens=s), corpus)
        except Exception as ex:  # noqa: BLE001
            e["transformers_error"] = repr(ex)
        sp_path = os.path.join(d, "tokenizer.model")
        if os.path.exists(sp_path) and not os.path.exists(tj):
            try:
                import sentencepiece as spm
                sp = spm.SentencePieceProcessor(model_file=sp_path)
                e["sentencepiece"] = {"ids_plain": [sp.encode(t) for t in corpus],
                                      "decoded": [sp.decode(sp.encode(t)) for t in corpus]}
            except Exception as ex:  # noqa: BLE001
                e["sentencepiece_error"] = repr(ex)
            for label, kw in (("slow", {"use_fast": False}),):
                try:
                    st = transformers.AutoTokenizer.from_pretrained(d, **kw)
                    e[label + "_class"] = type(st).__name__
                    e[label + "_has_sp_model"] = hasattr(st, "sp_model")
                    e[label] = block(lambda t, s: st.encode(t, add_special_tokens=s),
                                     lambda ids, s: st.decode(ids, skip_special_tokens=s), corpus)
                except Exception as ex:  # noqa: BLE001
                    e[label + "_error"] = repr(ex)
            try:
                from transformers import LlamaTokenizer
                lt = LlamaTokenizer(vocab_file=sp_path, legacy=True)
                e["llama_slow_class"] = type(lt).__name__ + (" (sp_model)" if hasattr(lt, "sp_model") else "")
                e["llama_slow"] = block(lambda t, s: lt.encode(t, add_special_tokens=s),
                                        lambda ids, s: lt.decode(ids, skip_special_tokens=s), corpus)
            except Exception as ex:  # noqa: BLE001
                e["llama_slow_error"] = repr(ex)
        e["seconds"] = round(time.time() - t0, 2)
        res[name] = e
        print(f"ref {name}: {', '.join(k for k in e if isinstance(e[k], dict))} ({e['seconds']}s)", flush=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=False)


def run_one(d, docs_path):
    import tokenizers
    docs = json.load(open(docs_path, encoding="utf-8"))
    tk = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    nbytes = sum(len(x.encode("utf-8")) for x in docs)
    tk.encode_batch(docs[:100], add_special_tokens=False)
    best, encs = 1e30, None
    for _ in range(2):
        t0 = time.perf_counter()
        encs = tk.encode_batch(docs, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
    out = {"batch_mbs": nbytes / 1e6 / best, "tokens": sum(len(e.ids) for e in encs),
           "checksum": checksum(e.ids for e in encs), "threads": os.environ.get("RAYON_NUM_THREADS", "all")}
    if os.environ.get("RAYON_NUM_THREADS") == "1":
        t0 = time.perf_counter()
        for x in docs:
            tk.encode(x, add_special_tokens=False)
        out["loop_mbs"] = nbytes / 1e6 / (time.perf_counter() - t0)
    print(json.dumps(out))


def bench(docs_path, lunar_path, items):
    import tokenizers
    lunar = {}
    if lunar_path and os.path.exists(lunar_path):
        for line in open(lunar_path):
            if line.startswith("{"):
                r = json.loads(line)
                lunar[r["tokenizer"]] = r
    any_l = next(iter(lunar.values()), {})
    print(f"# tokenizer encode MB/s on {any_l.get('bytes', 0) / 1e6:.2f} MB ({any_l.get('docs', '?')} docs), "
          f"{os.cpu_count()} cores, lunar {os.environ.get('LUNAR_COMMIT') or os.popen('git rev-parse --short HEAD 2>/dev/null').read().strip() or '?'}, "
          f"HF tokenizers {tokenizers.__version__}")
    print(f"{'tokenizer':<12} {'lunar 1T':>9} {'HF 1T':>9} {'lunar all':>10} {'HF all':>9} {'tokens':>10} ids")
    for name, d in items:
        res = {}
        for mode in ("1", "all"):
            env = dict(os.environ)
            if mode == "1":
                env["RAYON_NUM_THREADS"] = "1"
                env["RAYON_RS_NUM_CPUS"] = "1"
            p = subprocess.run([sys.executable, __file__, "run", d, docs_path], env=env, capture_output=True, text=True)
            if p.returncode:
                print(f"{name}: HF run failed: {p.stderr[-500:]}")
                continue
            res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        l = lunar.get(name, {})
        h1 = max(res.get("1", {}).get("batch_mbs", 0), res.get("1", {}).get("loop_mbs", 0))
        hall = res.get("all", {}).get("batch_mbs", 0)
        same = "same" if l.get("checksum") == res.get("1", {}).get("checksum") else \
            f"DIFFER (lunar {l.get('tokens')} tokens {l.get('checksum')}, HF {res.get('1', {}).get('tokens')} {res.get('1', {}).get('checksum')})"
        print(f"{name:<12} {l.get('mbs_1', 0):9.2f} {h1:9.2f} {l.get('mbs_all', 0):10.2f} {hall:9.2f} "
              f"{l.get('tokens', 0):>10} {same}", flush=True)
        print("  json " + json.dumps({"tokenizer": name, "lunar": l, "hf": res}), flush=True)


def variants(spec_path, root):
    spec = json.load(open(spec_path, encoding="utf-8"))
    for name, v in spec.items():
        if name.startswith("_"):
            continue
        base = json.load(open(os.path.join(root, v["base"], "tokenizer.json"), encoding="utf-8"))
        for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            if k in v:
                base[k] = v[k]
        vocab = base["model"]["vocab"]
        nxt = max(max(vocab.values()), max((a["id"] for a in base["added_tokens"]), default=-1)) + 1
        for a in v.get("added_tokens", []):
            a = dict(a)
            if a["content"] in vocab:
                a["id"] = vocab[a["content"]]
            else:
                a["id"] = nxt
                nxt += 1
            base["added_tokens"].append(a)
        d = os.path.join(root, "v_" + name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(base, f, ensure_ascii=False)
        print(f"variant {name} -> {d}", flush=True)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, rest = argv[1], argv[2:]
    opts, items = {}, []
    i = 0
    while i < len(rest):
        if rest[i].startswith("--"):
            opts[rest[i][2:]] = rest[i + 1]
            i += 2
        else:
            items.append(rest[i])
            i += 1
    if cmd == "ref":
        ref(opts["corpus"], opts["out"], pairs(items))
    elif cmd == "bench":
        bench(opts["corpus"], opts.get("lunar"), pairs(items))
    elif cmd == "variants":
        variants(opts["spec"], opts["root"])
    elif cmd == "run":
        run_one(items[0], items[1])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
