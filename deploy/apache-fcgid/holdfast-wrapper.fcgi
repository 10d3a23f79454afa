#!/bin/sh
# deploy/apache-fcgid/holdfast-wrapper.fcgi -- keeps the binary and its
# settings out of the web root.  holdfast finds a holdfast.conf beside
# itself (under suEXEC too); this two-line wrapper names the settings file
# instead, so the binary, its settings and the database can all live outside
# the web root:
#
#     ~/holdfast/holdfast          the binary (chmod 755)
#     ~/holdfast/holdfast.conf     deploy/apache-fcgid/holdfast.conf, edited
#     ~/holdfast-data/             the database folder (what holdfast.conf says)
#     ~/public_html/lp/holdfast.fcgi   THIS file (chmod 755), next to .htaccess
#
# CHANGE the two paths (echo $HOME shows yours).  mod_fcgid keeps the process
# that `exec` turns into; nothing else runs per request.
HOLDFAST_CONFIG=/home/USER/holdfast/holdfast.conf
export HOLDFAST_CONFIG
exec /home/USER/holdfast/holdfast
