#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Reads include/pact.h and writes what is derived from it, so that none of
it can drift from the header:

  pact-header.py man HEADER OUTDIR      one section-3 page per public
                                        function (PACT_API) and pact(7)
  pact-header.py tls-stubs HEADER OUT   src for a build without OpenSSL:
                                        every TLS function, answering
                                        -ENOTSUP (or NULL / 0)
  pact-header.py missing-stubs HEADER OUT NM LIB...
                                        src for a platform that lacks some:
                                        every public function LIB (read
                                        with the nm program NM) does not
                                        define, answering -ENOTSUP
  pact-header.py function-list HEADER OUT
                                        PACT_PUBLIC_FUNCTION(name) for each
                                        public function (a link test)
  pact-header.py list HEADER            the public functions, one a line
  pact-header.py check HEADER MANDIR    fails if a public function has no
                                        page in MANDIR (or a page has no
                                        function)
  pact-header.py naming HEADER          fails where a public name breaks
                                        the rules of docs/naming.md

A function's page is the comment directly above its declaration (several
declarations under one comment share it), its prototype, the types of the
header it names (option structs, callbacks), the sentences saying what it
returns, the errno values its comment names, and its neighbours in the
header's section.
"""
import datetime
import os
import re
import shutil
import subprocess
import sys

TYPEDEF_COMMENTS = {}
SECTION_RULE = re.compile(r'^/\* -{20,} \*/$')


class Decl:
    def __init__(self, name, ret, args, proto, comment, section):
        self.name, self.ret, self.args = name, ret, args
        self.proto, self.comment, self.section = proto, comment, section


def comment_text(block):
    """The text of a /* ... */ block without its stars."""
    lines = block.strip().splitlines()
    out = []
    for i, line in enumerate(lines):
        s = line.strip()
        if i == 0:
            s = s[2:]
        if s.endswith('*/'):
            s = s[:-2]
        s = s.rstrip()
        if s.startswith('* ') or s == '*':
            s = s[2:]
        elif s.startswith('*'):
            s = s[1:]
        out.append(s.rstrip() if i else s.strip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    # common indentation of continuation lines
    return '\n'.join(out)


def parse(path):
    text = open(path, encoding='utf-8').read()
    lines = text.splitlines()
    decls, typedefs, sections = [], {}, []
    section = 'General'
    intro = {}
    last_comment = None      # text of the last comment block seen
    comment_used = False     # a declaration already took it (still shared)
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        # boxed section titles: rule, /* Title */, rule
        if SECTION_RULE.match(s) and i + 2 < len(lines) and SECTION_RULE.match(lines[i + 2].strip()):
            section = lines[i + 1].strip()[2:-2].strip()
            sections.append(section)
            last_comment = None
            i += 3
            continue
        m = re.match(r'^/\* ---- (.*?) -*\s*\*/$', s)
        if m:
            section = m.group(1).strip()
            sections.append(section)
            last_comment = None
            i += 1
            continue
        if s.startswith('/*'):
            j = i
            while '*/' not in lines[j]:
                j += 1
            block = '\n'.join(lines[i:j + 1])
            # a comment followed by a blank line introduces a section
            nxt = lines[j + 1].strip() if j + 1 < len(lines) else ''
            txt = comment_text(block)
            if nxt == '' and section not in intro and not block.startswith('/* SPDX'):
                intro[section] = txt
            last_comment = txt if nxt != '' else None
            i = j + 1
            continue
        if s.startswith('PACT_API'):
            j = i
            while not lines[j].rstrip().endswith(';'):
                j += 1
            proto = '\n'.join(lines[i:j + 1])
            flat = ' '.join(proto.replace('PACT_API', '').split())
            m = re.match(r'(.*?)\b(pact_\w+)\s*\((.*)\)\s*(?:PACT_PRINTF\(.*\))?\s*;$', flat)
            if not m:
                sys.exit('cannot parse: ' + flat)
            ret, name, args = m.group(1).strip(), m.group(2), m.group(3)
            decls.append(Decl(name, ret, args, proto.replace('PACT_API ', ''),
                              last_comment or '', section))
            i = j + 1
            continue
        if s.startswith('typedef'):
            j = i
            depth = 0
            while True:
                depth += lines[j].count('{') - lines[j].count('}')
                if depth == 0 and lines[j].rstrip().endswith(';'):
                    break
                j += 1
            body = '\n'.join(lines[i:j + 1])
            flat = ' '.join(body.split())
            m = re.search(r'\(\s*\*\s*(\w+)\s*\)\s*\(', flat) or \
                re.search(r'(\w+)\s*;$', flat)
            if m and ('{' in body or '(' in body):
                typedefs[m.group(1)] = body
            if m:
                TYPEDEF_COMMENTS[m.group(1)] = last_comment or ''
            last_comment = None
            i = j + 1
            continue
        if s:
            last_comment = None
        i += 1
    top = comment_text(text[text.index('/*', text.index('*/')):text.index('*/', text.index('*/') + 2) + 2])
    return decls, typedefs, sections, intro, top


# ---- man pages -------------------------------------------------------------

def roff_escape(s):
    s = s.replace('\\', '\\e')
    s = re.sub(r'^([.\'])', r'\\&\1', s, flags=re.M)
    # groff reads ASCII; man-db's preconv would cope, plain groff warns
    return ''.join(c if ord(c) < 128 else '\\[u%04X]' % ord(c) for c in s)


def paragraphs(text):
    """Comment text as roff: blank lines and list items start paragraphs,
    indented lines are kept as they are."""
    out = []
    for para in re.split(r'\n\s*\n', text):
        plines = para.splitlines()
        if any(re.match(r'^\s+(-|\S)', l) for l in plines[1:]) or \
                any(l.lstrip().startswith('- ') for l in plines):
            out.append('.PP\n.nf\n' + roff_escape(para) + '\n.fi')
        else:
            out.append('.PP\n' + roff_escape(' '.join(l.strip() for l in plines)))
    return '\n'.join(out)


def sentences(text, stops='.;'):
    flat = ' '.join(text.split())
    return re.split(r'(?<=[%s])\s+(?=[A-Z(-])' % stops, flat)


def return_value(d):
    said = [s for s in sentences(d.comment, '.')
            if re.search(r'(^|[^a-z] )(Returns|Answers)\b|^(On success|On failure)\b', s)]
    if said:
        return ' '.join(said)
    if d.ret == 'void':
        return 'None.'
    if TYPEDEF_COMMENTS.get(d.ret):
        said = [sentences(TYPEDEF_COMMENTS[d.ret], '.')[0]]
        said += [s for s in sentences(d.comment, '.') if s.startswith('Result')]
        return ' '.join(said)
    return 'The value the description names.'


def errors(d):
    found = []
    for s in sentences(d.comment):
        for e in re.findall(r'-E[A-Z0-9]+', s):
            if e not in [f[0] for f in found]:
                found.append((e, s))
    return found


def man_page(d, decls, typedefs, date, version, intro):
    types = [t for t in typedefs if re.search(r'\b%s\b' % t, d.args + ' ' + d.ret)]
    # one level further: pact_op_cb names pact_completion
    for t in list(types):
        types += [u for u in typedefs if u not in types and re.search(r'\b%s\b' % u, typedefs[t])]
    neighbours = [x.name for x in decls if x.section == d.section and x.name != d.name]
    first = sentences(d.comment)[0] if d.comment else d.name
    short = re.sub(r'\s+', ' ', first).rstrip('.')
    if len(short) > 70:
        short = re.split(r'[;:]| \(', short)[0]
    out = ['.\\" Generated from include/pact.h by tools/pact-header.py; edit the header.',
           '.TH %s 3 %s "pact %s" "pact Manual"' % (d.name, date, version),
           '.SH NAME',
           '%s \\- %s' % (d.name, roff_escape(short)),
           '.SH SYNOPSIS', '.nf', '.B #include <pact.h>', '.PP']
    for t in types:
        out.append(roff_escape(typedefs[t]))
        out.append('.PP')
    out.append(roff_escape(d.proto))
    out += ['.fi', '.SH DESCRIPTION']
    out.append(paragraphs(d.comment) if d.comment else '.PP\nUndocumented.')
    out += ['.SH RETURN VALUE', roff_escape(return_value(d))]
    errs = errors(d)
    out.append('.SH ERRORS')
    if errs:
        for e, s in errs:
            out += ['.TP', '.B ' + e, roff_escape(s)]
    else:
        out.append('No errno values of its own beyond those the description names; '
                   'see pact(7) for the conventions.')
    if d.section in intro:
        out += ['.SH NOTES', '.PP', 'From the section "%s" of pact.h:' % roff_escape(d.section),
                paragraphs(intro[d.section])]
    out.append('.SH SEE ALSO')
    see = ['.BR pact (7)']
    for n in neighbours[:12]:
        see.append('.BR %s (3)' % n)
    out.append(',\n'.join(see))
    return '\n'.join(out) + '\n'


def overview(decls, sections, intro, top, date, version):
    out = ['.\\" Generated from include/pact.h by tools/pact-header.py; edit the header.',
           '.TH pact 7 %s "pact %s" "pact Manual"' % (date, version),
           '.SH NAME', 'pact \\- completion-based event loop library for Linux (io_uring and epoll)',
           '.SH SYNOPSIS', '.nf', '.B #include <pact.h>', '.PP',
           'cc prog.c $(pkg-config --cflags --libs pact)',
           'find_package(pact) ... target_link_libraries(prog pact::pact)',
           '.fi', '.SH DESCRIPTION', paragraphs(top),
           '.PP', 'The guide (guide.md) and the contract (contract.md) are installed '
           'in the documentation directory (usually /usr/share/doc/pact/); abi.md states '
           'the ABI and versioning policy.']
    for sec in sections:
        names = [d.name for d in decls if d.section == sec]
        if not names:
            continue
        out.append('.SH ' + roff_escape(sec.upper()))
        if sec in intro:
            out.append(paragraphs(intro[sec]))
        out.append('.PP')
        out.append(',\n'.join('.BR %s (3)' % n for n in names))
    return '\n'.join(out) + '\n'


def version_of(header):
    # The version lives in meson.build; the generated pact_version.h may
    # not exist yet when pages are made from a source tree.
    root = os.path.dirname(os.path.dirname(os.path.abspath(header)))
    try:
        m = re.search(r"version\s*:\s*'([^']+)'", open(os.path.join(root, 'meson.build')).read())
        return m.group(1)
    except OSError:
        return ''


def write_man(header, outdir, version):
    decls, typedefs, sections, intro, top = parse(header)
    date = datetime.date.fromtimestamp(
        int(os.environ.get('SOURCE_DATE_EPOCH', os.path.getmtime(header)))).isoformat()
    version = version or version_of(header)
    os.makedirs(outdir, exist_ok=True)
    for d in decls:
        with open(os.path.join(outdir, d.name + '.3'), 'w') as f:
            f.write(man_page(d, decls, typedefs, date, version, intro))
    with open(os.path.join(outdir, 'pact.7'), 'w') as f:
        f.write(overview(decls, sections, intro, top, date, version))


# ---- -ENOTSUP stubs ----------------------------------------------------------

# Functions answering a yes/no question: a stub says no.
PREDICATES = ('pact_transport_is_tls', 'pact_tls_session_reused')


def stub_return(d):
    """The statement a stub of d ends with: -ENOTSUP where the function
    returns a negative errno, otherwise what says "nothing" for its type."""
    if d.ret == 'void':
        return ''
    if d.ret in ('int', 'pact_op', 'pact_handle', 'pact_signal', 'int64_t'):
        if d.name in PREDICATES or re.search(r'_(is|can)_', d.name):
            return 'return 0;'
        return 'return -ENOTSUP;'
    if d.ret in ('long', 'pid_t'):
        return 'return -1;'
    if d.ret in ('uint64_t', 'size_t', 'unsigned') or d.ret.startswith('pact_') and '*' not in d.ret:
        return 'return 0;'
    return 'return NULL;'


def stub(d):
    """A definition of d that does nothing and refuses with stub_return():
    its out-parameters (pact_x **out) are set to NULL, as a failure of
    the real function leaves them."""
    lines = [' '.join(d.proto.split())[:-1].replace('PACT_API ', ''), '{']
    params, outs = [], []
    for a in d.args.split(','):
        a = a.strip()
        m = re.search(r'(\w+)\s*$', a)
        if m and a != 'void':
            params.append(m.group(1))
            if re.match(r'^pact_\w+\s*\*\s*\*\s*\w+$', a):
                outs.append(m.group(1))
    if params:
        lines.append('    ' + ' '.join('(void)%s;' % p for p in params))
    for o in outs:
        lines.append('    if (%s)\n        *%s = NULL;' % (o, o))
    if stub_return(d):
        lines.append('    ' + stub_return(d))
    lines += ['}', '']
    return lines


def tls_stubs(header, out):
    decls, _, _, _, _ = parse(header)
    tls = [d for d in decls if d.section.startswith('TLS')]
    if not tls:
        sys.exit('no TLS section in ' + header)
    body = ['/* SPDX-License-Identifier: MIT */',
            '/* Generated by tools/pact-header.py tls-stubs from include/pact.h:',
            ' * the TLS functions of a library built without OpenSSL (-Dtls=disabled).',
            ' * Each refuses with -ENOTSUP (NULL, 0 or -1 where it returns no errno). */',
            '#include "pact.h"', '#include <errno.h>', '#include <stddef.h>', '']
    for d in tls:
        body += stub(d)
    with open(out, 'w') as f:
        f.write('\n'.join(body))


def defined_functions(nm, libraries):
    """The pact_ functions the object files or archives define (nm)."""
    names = set()
    for lib in libraries:
        r = subprocess.run([nm, '-g', '--defined-only', lib],
                           capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] == 'T' and f[2].startswith('pact_'):
                names.add(f[2])
    return names


def missing_stubs(header, out, nm, libraries):
    """Every public function the libraries do not define, answering
    -ENOTSUP: a program calling what a platform lacks still links, and
    learns at run time that it is not supported there."""
    decls, _, _, _, _ = parse(header)
    have = defined_functions(nm, libraries)
    missing = [d for d in decls if d.name not in have]
    body = ['/* SPDX-License-Identifier: MIT */',
            '/* Generated by tools/pact-header.py missing-stubs from include/pact.h and',
            ' * the library built for this platform: each public function the',
            ' * platform does not implement, refusing with -ENOTSUP (NULL, 0 or -1',
            ' * where it returns no errno; 0 for a yes/no question). */',
            '#include "pact.h"', '#include <errno.h>', '#include <stddef.h>', '']
    for d in missing:
        body += stub(d)
    with open(out, 'w') as f:
        f.write('\n'.join(body))


def function_list(header, out):
    """A C header naming every public function once, as
    PACT_PUBLIC_FUNCTION(name), for a test that takes each one's address."""
    decls, _, _, _, _ = parse(header)
    body = ['/* Generated by tools/pact-header.py function-list from include/pact.h. */']
    body += ['PACT_PUBLIC_FUNCTION(%s)' % d.name for d in decls]
    with open(out, 'w') as f:
        f.write('\n'.join(body) + '\n')


# ---- naming rules (docs/naming.md) -----------------------------------------

HANDLE_KINDS = ('pact_handle', 'pact_op', 'pact_signal')
ENDING_VERBS_REFUSED = ('remove', 'delete', 'destroy', 'release',
                        'unregister', 'dispose')


def naming(header):
    decls, typedefs, _, _, _ = parse(header)
    text = open(header, encoding='utf-8').read()
    bad = []
    # every function-pointer type ends in _cb
    for name in re.findall(r'^typedef\s[^;{]*?\(\s*\*\s*(\w+)\s*\)\s*\(', text, re.M):
        if not name.endswith('_cb'):
            bad.append('callback type %s does not end in _cb' % name)
    # a struct typedef holding callbacks is a "protocol"
    for m in re.finditer(r'^typedef struct (\w+) \{(.*?)\} (\w+);', text, re.M | re.S):
        if re.search(r'\(\s*\*\s*\w+\s*\)\s*\(', m.group(2)) and not m.group(3).endswith('_protocol'):
            bad.append('struct of callbacks %s does not end in _protocol' % m.group(3))
    for d in decls:
        verb = d.name.rsplit('_', 1)[-1]
        first = d.args.split(',')[1].strip() if d.args.count(',') else ''
        if verb in ENDING_VERBS_REFUSED:
            bad.append('%s: end a handle with _cancel, an object with _close' % d.name)
        if verb == 'new':
            bad.append('%s: objects are made with _create' % d.name)
        if verb == 'cancel' and not any(first.startswith(k + ' ') for k in HANDLE_KINDS):
            bad.append('%s: _cancel takes a handle (%s)' % (d.name, ', '.join(HANDLE_KINDS)))
        obj = re.sub(r'^const\s+', '', d.args.split(',')[0].strip())
        if verb in ('close', 'abort') and not re.match(r'pact_\w+ \*', obj):
            if not d.name.startswith('pact_fs_'):   # pact_fs_close is close(2) as an op
                bad.append('%s: _close / _abort take the object' % d.name)
        kind = [k for k in HANDLE_KINDS if first.startswith(k + ' ')]
        if kind and not d.name.startswith(kind[0] + '_'):
            bad.append('%s: a function on a %s is named %s_<verb>' % (d.name, kind[0], kind[0]))
        if verb == 'close' and any(d.args.startswith(k + ' ') for k in HANDLE_KINDS):
            bad.append('%s: a handle is cancelled, not closed' % d.name)
    for b in bad:
        print(b)
    return 1 if bad else 0


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, header = sys.argv[1], sys.argv[2]
    if cmd == 'man':
        write_man(header, sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else '')
    elif cmd == 'tls-stubs':
        tls_stubs(header, sys.argv[3])
    elif cmd == 'missing-stubs':
        missing_stubs(header, sys.argv[3], sys.argv[4], sys.argv[5:])
    elif cmd == 'function-list':
        function_list(header, sys.argv[3])
    elif cmd == 'naming':
        sys.exit(naming(header))
    elif cmd == 'list':
        for d in parse(header)[0]:
            print(d.name)
    elif cmd == 'check':
        # every PACT_API declaration, found without parse()
        text = open(header, encoding='utf-8').read()
        names = set(re.findall(r'^PACT_API\b[^;(]*?\b(pact_\w+)\s*\(', text, re.M))
        mandir = sys.argv[3]
        pages = {f[:-2] for f in os.listdir(mandir) if f.endswith('.3')}
        missing, stray = sorted(names - pages), sorted(pages - names)
        for n in missing:
            print('no man page for public function', n)
        for n in stray:
            print('man page without a public function:', n)
        if not os.path.exists(os.path.join(mandir, 'pact.7')):
            print('no pact.7')
            missing.append('pact.7')
        for n in sorted(names & pages):
            page = open(os.path.join(mandir, n + '.3')).read()
            for sec in ('.SH NAME', '.SH SYNOPSIS', '.SH DESCRIPTION',
                        '.SH RETURN VALUE', '.SH ERRORS', '.SH SEE ALSO'):
                if sec not in page:
                    print('%s.3 has no %s' % (n, sec[4:]))
                    stray.append(n)
        # every page renders without a warning (where groff is installed)
        if shutil.which('groff'):
            for f in sorted(os.listdir(mandir)):
                if f.endswith(('.3', '.7')):
                    r = subprocess.run(['groff', '-man', '-ww', '-z', os.path.join(mandir, f)],
                                       capture_output=True, text=True)
                    if r.returncode or r.stderr:
                        print('%s: %s' % (f, r.stderr.strip()))
                        stray.append(f)
        if missing or stray:
            sys.exit(1)
        print('%d public functions, each with a page' % len(names))
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
