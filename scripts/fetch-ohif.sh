#!/usr/bin/env bash
# Fetch the built OHIF viewer (npm package @ohif/app ships dist/) and
# prepare it to be served by mado-server at /ohif/ against /dicomweb on the
# same origin (session cookie). Then set in the server config:
#   [ohif]
#   dist_dir = "DIR"
#
# usage: scripts/fetch-ohif.sh DIR        (OHIF_VERSION=3.12.10 by default)
set -euo pipefail
DEST="${1:?usage: fetch-ohif.sh DIR}"
VERSION="${OHIF_VERSION:-3.12.10}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && npm pack --silent "@ohif/app@$VERSION" >/dev/null )
tar xzf "$TMP"/ohif-app-*.tgz -C "$TMP"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$TMP/package/dist" "$DEST"
rm -f "$DEST/sw.js" "$DEST/init-service-worker.js" "$DEST/_redirects" "$DEST/_headers" "$DEST/serve.json"

# The build assumes it is served at "/": move every absolute reference under /ohif/.
python3 - "$DEST" <<'PY'
import glob, os, re, sys
d = sys.argv[1]
idx = os.path.join(d, "index.html")
html = open(idx, encoding="utf-8").read()
html = html.replace("window.PUBLIC_URL = '/'", "window.PUBLIC_URL = '/ohif/'")
html = re.sub(r'(src|href)="/(?!/)', r'\1="/ohif/', html)
# No service worker: a Mado page must never be served from a stale cache.
html = re.sub(r'<script[^>]*init-service-worker\.js[^>]*></script>', '', html)
open(idx, "w", encoding="utf-8").write(html)
for css in glob.glob(os.path.join(d, "*.css")):
    s = open(css, encoding="utf-8", errors="surrogateescape").read()
    t = re.sub(r"""url\((["']?)/(?!/)""", r"url(\1/ohif/", s)
    if t != s:
        open(css, "w", encoding="utf-8", errors="surrogateescape").write(t)
man = os.path.join(d, "manifest.json")
if os.path.exists(man):
    s = open(man, encoding="utf-8").read()
    open(man, "w", encoding="utf-8").write(re.sub(r'"/(?!/)', '"/ohif/', s))
for js in glob.glob(os.path.join(d, "*.js")):
    s = open(js, encoding="utf-8", errors="surrogateescape").read()
    t = s.replace('__webpack_require__.p = "/"', '__webpack_require__.p = "/ohif/"')
    if t != s:
        open(js, "w", encoding="utf-8", errors="surrogateescape").write(t)
PY

cat >"$DEST/app-config.js" <<'JS'
/** Mado: OHIF against the same-origin DICOMweb service (session cookie). */
window.config = {
  routerBasename: '/ohif',
  showStudyList: true,
  extensions: [],
  modes: [],
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'mado',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'mado',
      configuration: {
        friendlyName: 'Mado',
        name: 'mado',
        wadoUriRoot: window.location.origin + '/dicomweb',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
JS
echo "OHIF $VERSION prepared in $DEST"
