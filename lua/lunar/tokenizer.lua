-- lunar.tokenizer — the C tokenizer (lunar/tokenizer.h) in Lua's conventions.
--
--   local T = require "lunar.tokenizer"
--   local tok, err = T.load(dir)                 -- tokenizer.json or tokenizer.model + configs
--   local ids = tok:encode(text, { add_special_tokens = true, split_special_tokens = false })
--   local text = tok:decode(ids, { skip_special_tokens = true })
--   local s = tok:stream { skip_special_tokens = true }; s:prime(prompt_ids); s:push(id) -> text;
--   s:flush() -> text
--   tok:id_to_token(id), tok:token_to_id(str), tok.bos_id, tok.eos_id, tok.eos_ids, ...
--
-- Ids are 0-based integers as the model sees them, in 1-based Lua arrays. Failures return
-- nil, err. Handles are freed by ffi.gc; C buffers are copied out and freed at once.
local lffi = require "lunar.ffi"
local ffi, C = lffi.ffi, lffi.C

local M = {}
local Tok = {}
Tok.__index = Tok
local Stream = {}
Stream.__index = Stream

local function opt(o, k, dflt)
  if o == nil or o[k] == nil then return dflt end
  return o[k]
end

function M.load(dir)
  local out = ffi.new("lunar_tokenizer_t *[1]")
  local ok, err = lffi.check(C.lunar_tokenizer_load(dir, out))
  if not ok then return nil, err end
  local h = ffi.gc(out[0], C.lunar_tokenizer_free)
  local self = setmetatable({ handle = h, dir = dir }, Tok)
  local function id(v) return v >= 0 and v or nil end
  self.bos_id = id(C.lunar_tokenizer_bos_id(h))
  self.eos_id = id(C.lunar_tokenizer_eos_id(h))
  self.pad_id = id(C.lunar_tokenizer_pad_id(h))
  self.unk_id = id(C.lunar_tokenizer_unk_id(h))
  self.add_bos = C.lunar_tokenizer_add_bos(h) == 1
  self.vocab_size = tonumber(C.lunar_tokenizer_vocab_size(h))
  self.description = ffi.string(C.lunar_tokenizer_describe(h))
  local pids = ffi.new("const int32_t *[1]")
  local n = tonumber(C.lunar_tokenizer_eos_ids(h, pids))
  self.eos_ids = {}
  for i = 0, n - 1 do self.eos_ids[#self.eos_ids + 1] = pids[0][i] end
  self.chat_templates = {}
  local i = 0
  while true do
    local name = C.lunar_tokenizer_chat_template_name(h, i)
    if name == nil then break end
    local s = ffi.string(name)
    self.chat_templates[s] = ffi.string(C.lunar_tokenizer_chat_template(h, name))
    i = i + 1
  end
  return self
end

local function flags(o)
  local f = 0
  if opt(o, "add_special_tokens", true) then f = f + C.LUNAR_TOK_ADD_SPECIAL end
  if opt(o, "split_special_tokens", false) then f = f + C.LUNAR_TOK_SPLIT_SPECIAL end
  return f
end

local function to_lua(ptr, n)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = ptr[i] end
  return t
end

function Tok:encode(text, o)
  local pids, pn = ffi.new("int32_t *[1]"), ffi.new("size_t[1]")
  local ok, err = lffi.check(C.lunar_tokenizer_encode(self.handle, text, #text, flags(o), pids, pn))
  if not ok then return nil, err end
  local t = to_lua(pids[0], tonumber(pn[0]))
  C.lunar_free(pids[0])
  return t
end

-- texts: array of strings; o.threads (default 0 = all cores). Returns an array of id arrays.
function Tok:encode_batch(texts, o)
  local n = #texts
  if n == 0 then return {} end
  local ptrs, lens = ffi.new("const char *[?]", n), ffi.new("size_t[?]", n)
  for i = 1, n do ptrs[i - 1], lens[i - 1] = texts[i], #texts[i] end
  local ids, ns = ffi.new("int32_t *[?]", n), ffi.new("size_t[?]", n)
  local ok, err = lffi.check(C.lunar_tokenizer_encode_batch(self.handle, n, ptrs, lens, flags(o),
    opt(o, "threads", 0), ids, ns))
  if not ok then return nil, err end
  local out = {}
  for i = 0, n - 1 do
    out[i + 1] = to_lua(ids[i], tonumber(ns[i]))
    C.lunar_free(ids[i])
  end
  return out
end

local function id_array(ids)
  local n = #ids
  local a = ffi.new("int32_t[?]", n > 0 and n or 1)
  for i = 1, n do a[i - 1] = ids[i] end
  return a, n
end

function Tok:decode(ids, o)
  local a, n = id_array(ids)
  local ptext, plen = ffi.new("char *[1]"), ffi.new("size_t[1]")
  local ok, err = lffi.check(C.lunar_tokenizer_decode(self.handle, a, n,
    opt(o, "skip_special_tokens", false) and 1 or 0, ptext, plen))
  if not ok then return nil, err end
  local s = ffi.string(ptext[0], plen[0])
  C.lunar_free(ptext[0])
  return s
end

function Tok:id_to_token(id)
  local len = ffi.new("size_t[1]")
  local p = C.lunar_tokenizer_id_to_token(self.handle, id, len)
  if p == nil then return nil end
  return ffi.string(p, len[0])
end

function Tok:token_to_id(s)
  local id = C.lunar_tokenizer_token_to_id(self.handle, s, #s)
  return id >= 0 and id or nil
end

function Tok:is_special(id) return C.lunar_tokenizer_is_special(self.handle, id) == 1 end

function Tok:chat_template(name) return self.chat_templates[name or "default"] end

function Tok:stream(o)
  local out = ffi.new("lunar_detok_t *[1]")
  local ok, err = lffi.check(C.lunar_detok_create(self.handle, opt(o, "skip_special_tokens", false) and 1 or 0, out))
  if not ok then return nil, err end
  return setmetatable({ handle = ffi.gc(out[0], C.lunar_detok_free), tok = self,
    ptext = ffi.new("const char *[1]"), plen = ffi.new("size_t[1]") }, Stream)
end

function Stream:push(id)
  local ok, err = lffi.check(C.lunar_detok_push(self.handle, id, self.ptext, self.plen))
  if not ok then return nil, err end
  return ffi.string(self.ptext[0], self.plen[0])
end

-- Feeds the prompt's ids (their text is not returned) so that generated ids decode in context.
function Stream:prime(ids)
  local a, n = id_array(ids)
  return lffi.check(C.lunar_detok_prime(self.handle, a, n))
end

function Stream:flush()
  local ok, err = lffi.check(C.lunar_detok_flush(self.handle, self.ptext, self.plen))
  if not ok then return nil, err end
  return ffi.string(self.ptext[0], self.plen[0])
end

return M
