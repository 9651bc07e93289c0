# podci run (issue 9): the runner's end-to-end tests clone repositories with git and run
# jobs with bash (shell executor); bench/runner.sh reads the fake server's state with curl
# and python3. The fake GitLab server is a workspace member built by cargo itself.
apt_install git bash curl python3
