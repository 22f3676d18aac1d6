# OdaKvmSshLab.psm1 -- an SSH server on 127.0.0.1:2222 for the end-to-end tests of remote destinations.
#
# Debian 12, root, no systemd: a private sshd (own host key, own PidFile) next to nothing else, with internal-sftp
# and a PowerShell remoting subsystem that runs the very pwsh running the lab. Root's real ~/.ssh/config gets one
# managed block (between marker lines, at the top of the file, ending with 'Host *' so that what follows keeps its
# meaning) with three aliases:
#   odakvm-backup   the good one: its own known_hosts holds the lab's host key
#   odakvm-unknown  an empty known_hosts and 'StrictHostKeyChecking no' (the module must refuse anyway)
#   odakvm-changed  a known_hosts that holds another key for [127.0.0.1]:2222
# Everything else lives under Get-LabSshRoot ($env:ODAKVM_SSHLAB, default /var/tmp/odakvmlab-ssh).
#
#   Import-Module ./tests/Lab/OdaKvmSshLab.psm1; Start-LabSshd
#   ssh odakvm-backup true; Copy-VmDisk ... -Destination 'odakvm-backup:/var/tmp/odakvmlab-ssh/backup'
#   Stop-LabSshd; Remove-LabSshClientConfig
#   Get-LabSshXfsFolder   # the server's folder on an XFS with reflink (the libvirt lab's XFS; Remove-Lab tears it down)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:Port = 2222
$script:Packages = @{ '/usr/sbin/sshd' = 'openssh-server'; '/usr/bin/ssh' = 'openssh-client'; '/usr/bin/rsync' = 'rsync' }
$script:BeginMarker = '# >>> OdaKvmSshLab: managed by tests/Lab/OdaKvmSshLab.psm1, removed by Remove-LabSshClientConfig >>>'
$script:EndMarker = '# <<< OdaKvmSshLab <<<'
$script:Aliases = @{ 'odakvm-backup' = 'known_hosts.backup'; 'odakvm-unknown' = 'known_hosts.unknown'; 'odakvm-changed' = 'known_hosts.changed' }

# ------------------------------------------------------------------ private helpers

# Runs a native command (no shell), LC_ALL=C; throws with its stderr unless the exit code is 0 or -AllowFailure.
function Invoke-SshLabNative([string]$FilePath, [string[]]$ArgumentList = @(), [switch]$AllowFailure) {
    $psi = [System.Diagnostics.ProcessStartInfo]::new($FilePath)
    foreach ($a in $ArgumentList) { $psi.ArgumentList.Add($a) }
    $psi.UseShellExecute = $false
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.Environment['LC_ALL'] = 'C'
    $psi.Environment['DEBIAN_FRONTEND'] = 'noninteractive'
    $p = [System.Diagnostics.Process]::Start($psi)
    try {
        $p.StandardInput.Close()
        $err = $p.StandardError.ReadToEndAsync()
        $out = $p.StandardOutput.ReadToEnd()
        $p.WaitForExit()
        $r = [pscustomobject]@{ ExitCode = $p.ExitCode; StdOut = $out; StdErr = $err.GetAwaiter().GetResult() }
    }
    finally { $p.Dispose() }
    if (-not $AllowFailure -and $r.ExitCode -ne 0) {
        throw "$FilePath $($ArgumentList -join ' ') failed with exit code $($r.ExitCode): $($r.StdErr.Trim())"
    }
    $r
}

function Get-SshLabPath([string]$Name) { Join-Path (Get-LabSshRoot) $Name }

function Get-SshLabDaemonPid {
    $pidFile = Get-SshLabPath 'sshd.pid'
    if (-not (Test-Path -LiteralPath $pidFile)) { return 0 }
    $id = 0
    if (-not [int]::TryParse((Get-Content -Raw -LiteralPath $pidFile).Trim(), [ref]$id)) { return 0 }
    try { $comm = [System.IO.File]::ReadAllText("/proc/$id/comm").Trim() } catch { return 0 }
    if ($comm -eq 'sshd') { $id } else { 0 }
}

# The children of a process (an sshd's connections), from /proc/<pid>/stat.
function Get-SshLabChildProcessId([int]$ParentId) {
    foreach ($dir in [System.IO.Directory]::EnumerateDirectories('/proc')) {
        $id = 0
        if (-not [int]::TryParse([System.IO.Path]::GetFileName($dir), [ref]$id)) { continue }
        try { $stat = [System.IO.File]::ReadAllText("$dir/stat") } catch { continue }
        $fields = $stat.Substring($stat.LastIndexOf(')') + 2).Split(' ')
        if ([int]$fields[1] -eq $ParentId) { $id }
    }
}

function Test-SshLabPortOpen {
    $client = [System.Net.Sockets.TcpClient]::new()
    try { $client.Connect('127.0.0.1', $script:Port); $true } catch { $false } finally { $client.Dispose() }
}

function New-SshLabKey([string]$Name) {
    $path = Get-SshLabPath $Name
    if (-not (Test-Path -LiteralPath $path)) {
        $null = Invoke-SshLabNative ssh-keygen @('-q', '-t', 'ed25519', '-N', '', '-C', "odakvm-sshlab-$Name", '-f', $path)
    }
    $path
}

# "ssh-ed25519 AAAA..." without the comment.
function Get-SshLabPublicKey([string]$Name) {
    ((Get-Content -Raw -LiteralPath (Get-SshLabPath "$Name.pub")).Trim().Split(' ') | Select-Object -First 2) -join ' '
}

# The command that starts this very pwsh: the dotnet host and pwsh.dll for a .NET tool, else the pwsh binary.
function Get-SshLabPwshCommand {
    $process = [Environment]::ProcessPath
    $parts = if ([System.IO.Path]::GetFileNameWithoutExtension($process) -eq 'dotnet') { @($process, [Environment]::GetCommandLineArgs()[0]) } else { @($process) }
    # sshd hands the Subsystem command to the login shell: quote what holds a space.
    ($parts | ForEach-Object { if ($_ -match '\s') { "'" + ($_ -replace "'", "'\''") + "'" } else { $_ } }) -join ' '
}

function Get-SshLabDaemonConfig {
    @(
        "Port $script:Port"
        'ListenAddress 127.0.0.1'
        "HostKey $(Get-SshLabPath 'host_key')"
        "PidFile $(Get-SshLabPath 'sshd.pid')"
        "AuthorizedKeysFile $(Get-SshLabPath 'authorized_keys')"
        'PermitRootLogin prohibit-password'
        'PasswordAuthentication no'
        'KbdInteractiveAuthentication no'
        'UsePAM no'
        'StrictModes no'
        'MaxStartups 100'
        'MaxSessions 100'
        'Subsystem sftp internal-sftp'
        "Subsystem powershell $(Get-SshLabPwshCommand) -sshs -NoLogo"
        ''
    ) -join "`n"
}

function Get-SshLabClientBlock {
    $lines = @($script:BeginMarker)
    foreach ($alias in 'odakvm-backup', 'odakvm-unknown', 'odakvm-changed') {
        $lines += "Host $alias"
        $lines += '  HostName 127.0.0.1'
        $lines += "  Port $script:Port"
        $lines += '  User root'
        $lines += "  IdentityFile $(Get-SshLabPath 'client_key')"
        $lines += '  IdentitiesOnly yes'
        $lines += "  UserKnownHostsFile $(Get-SshLabPath $script:Aliases[$alias])"
        $lines += '  GlobalKnownHostsFile /dev/null'
        if ($alias -eq 'odakvm-unknown') { $lines += '  StrictHostKeyChecking no' }
    }
    # Back to 'every host' so that the user's own lines after the block mean what they meant before it.
    $lines += 'Host *'
    $lines += $script:EndMarker
    ($lines -join "`n") + "`n"
}

# Root's ~/.ssh/config; when it is a symbolic link (dotfiles), the file it points to, so the link stays a link.
function Get-SshLabUserConfigPath {
    $path = Join-Path ([Environment]::GetFolderPath('UserProfile')) '.ssh/config'
    $info = [System.IO.FileInfo]::new($path)
    if ($info.LinkTarget) { $info.ResolveLinkTarget($true).FullName } else { $path }
}

# Writes a file through a temporary name and a rename, keeping the old file's mode (a new one is 0600).
function Write-SshLabFileAtomically([string]$Path, [string]$Content) {
    $mode = if (Test-Path -LiteralPath $Path) { [System.IO.File]::GetUnixFileMode($Path) } else { [System.IO.UnixFileMode]'UserRead, UserWrite' }
    $temp = "$Path.odakvm-sshlab-$([guid]::NewGuid().ToString('N'))"
    [System.IO.File]::WriteAllText($temp, $Content)
    [System.IO.File]::SetUnixFileMode($temp, $mode)
    [System.IO.File]::Move($temp, $Path, $true)
}

# The user's ~/.ssh/config without the managed block: exactly what was there before Set-LabSshClientConfig.
function Get-SshLabUserConfigWithoutBlock([string]$Text) {
    $begin = $Text.IndexOf($script:BeginMarker, [StringComparison]::Ordinal)
    if ($begin -lt 0) { return $Text }
    $end = $Text.IndexOf($script:EndMarker, $begin, [StringComparison]::Ordinal)
    if ($end -lt 0) { throw "$(Get-SshLabUserConfigPath) has the OdaKvmSshLab begin marker but not its end marker: fix it by hand." }
    $end += $script:EndMarker.Length
    if ($end -lt $Text.Length -and $Text[$end] -eq "`n") { $end++ }
    $Text.Remove($begin, $end - $begin)
}

# ------------------------------------------------------------------ public

function Get-LabSshRoot {
    $root = if ($env:ODAKVM_SSHLAB) { $env:ODAKVM_SSHLAB } else { '/var/tmp/odakvmlab-ssh' }
    if (-not (Test-Path -LiteralPath $root)) {
        $null = New-Item -ItemType Directory -Path $root
        [System.IO.File]::SetUnixFileMode($root, [System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    }
    $root
}

<#
.SYNOPSIS
    Starts the lab's sshd on 127.0.0.1:2222 (idempotent) and writes the client aliases into ~/.ssh/config.
.DESCRIPTION
    Installs openssh-server, openssh-client and rsync with apt when missing. Keys are made once; the known_hosts
    files of the three aliases are written again on every call (ssh odakvm-unknown adds a key to its file). A running
    sshd whose configuration is unchanged is left alone; otherwise it is restarted.
#>
function Start-LabSshd {
    [CmdletBinding()]
    param()
    $missing = @($script:Packages.Keys | Where-Object { -not (Test-Path -LiteralPath $_) } | ForEach-Object { $script:Packages[$_] })
    if ($missing.Count -gt 0) {
        $null = Invoke-SshLabNative apt-get @('update', '-qq')
        $null = Invoke-SshLabNative apt-get (@('install', '-y', '--no-install-recommends') + $missing)
    }
    $null = New-SshLabKey 'host_key'
    $null = New-SshLabKey 'other_host_key'
    $null = New-SshLabKey 'client_key'
    [System.IO.File]::WriteAllText((Get-SshLabPath 'authorized_keys'), (Get-SshLabPublicKey 'client_key') + "`n")
    $hostName = "[127.0.0.1]:$script:Port"
    [System.IO.File]::WriteAllText((Get-SshLabPath 'known_hosts.backup'), "$hostName $(Get-SshLabPublicKey 'host_key')`n")
    [System.IO.File]::WriteAllText((Get-SshLabPath 'known_hosts.changed'), "$hostName $(Get-SshLabPublicKey 'other_host_key')`n")
    [System.IO.File]::WriteAllText((Get-SshLabPath 'known_hosts.unknown'), '')

    $configPath = Get-SshLabPath 'sshd_config'
    $config = Get-SshLabDaemonConfig
    $changed = -not (Test-Path -LiteralPath $configPath) -or ([System.IO.File]::ReadAllText($configPath) -cne $config)
    if ($changed) { [System.IO.File]::WriteAllText($configPath, $config) }
    if ((Get-SshLabDaemonPid) -and -not $changed -and (Test-SshLabPortOpen)) {
        Write-Verbose 'The lab sshd already runs with this configuration.'
    }
    else {
        Stop-LabSshd
        if (Test-SshLabPortOpen) { throw "Something else listens on 127.0.0.1:$script:Port: the lab sshd needs that port." }
        $null = New-Item -ItemType Directory -Force -Path '/run/sshd' # privilege separation folder
        $null = Invoke-SshLabNative /usr/sbin/sshd @('-t', '-f', $configPath)
        # Without -D sshd detaches: it outlives this pwsh (Pester runs in a child pwsh) and is stopped by its PidFile.
        $null = Invoke-SshLabNative /usr/sbin/sshd @('-f', $configPath, '-E', (Get-SshLabPath 'sshd.log'))
        $deadline = [DateTime]::UtcNow.AddSeconds(10)
        while (-not (Test-SshLabPortOpen)) {
            if ([DateTime]::UtcNow -gt $deadline) { throw "The lab sshd does not listen on 127.0.0.1:$script:Port. Its log:`n$(Get-Content -Raw -LiteralPath (Get-SshLabPath 'sshd.log'))" }
            Start-Sleep -Milliseconds 50
        }
    }
    Set-LabSshClientConfig
    [pscustomobject]@{ Port = $script:Port; ProcessId = Get-SshLabDaemonPid; Root = Get-LabSshRoot; Aliases = @($script:Aliases.Keys | Sort-Object) }
}

<# .SYNOPSIS Stops the lab's sshd and its open connections (by the pid in its PidFile). Nothing running is fine. #>
function Stop-LabSshd {
    [CmdletBinding()]
    param()
    $daemon = Get-SshLabDaemonPid
    if (-not $daemon) { return }
    $ids = @($daemon) + @(Get-SshLabChildProcessId $daemon)
    foreach ($id in $ids) {
        try { [System.Diagnostics.Process]::GetProcessById($id).Kill($true) } catch [System.ArgumentException] { }
    }
    foreach ($id in $ids) {
        try { $null = [System.Diagnostics.Process]::GetProcessById($id).WaitForExit(10000) } catch [System.ArgumentException] { }
    }
    Remove-Item -Force -ErrorAction SilentlyContinue -LiteralPath (Get-SshLabPath 'sshd.pid')
}

<# .SYNOPSIS Cuts every open connection (kills the listener's per-connection sshd processes); the listener stays up. Returns how many were cut. #>
function Stop-LabSshSession {
    [CmdletBinding()]
    param()
    $daemon = Get-SshLabDaemonPid
    if (-not $daemon) { return 0 }
    $ids = @(Get-SshLabChildProcessId $daemon)
    foreach ($id in $ids) {
        try { [System.Diagnostics.Process]::GetProcessById($id).Kill($true) } catch [System.ArgumentException] { }
    }
    $ids.Count
}

<# .SYNOPSIS Writes (or refreshes) the managed block of lab aliases at the top of root's ~/.ssh/config. #>
function Set-LabSshClientConfig {
    [CmdletBinding()]
    param()
    $path = Get-SshLabUserConfigPath
    $folder = Split-Path -Parent $path
    if (-not (Test-Path -LiteralPath $folder)) {
        $null = New-Item -ItemType Directory -Path $folder
        [System.IO.File]::SetUnixFileMode($folder, [System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    }
    $current = if (Test-Path -LiteralPath $path) { [System.IO.File]::ReadAllText($path) } else { '' }
    $content = (Get-SshLabClientBlock) + (Get-SshLabUserConfigWithoutBlock $current)
    if ($content -cne $current) { Write-SshLabFileAtomically $path $content }
}

<# .SYNOPSIS Removes the managed block from root's ~/.ssh/config, leaving the rest byte for byte (a file left empty is deleted). #>
function Remove-LabSshClientConfig {
    [CmdletBinding()]
    param()
    $path = Get-SshLabUserConfigPath
    if (-not (Test-Path -LiteralPath $path)) { return }
    $current = [System.IO.File]::ReadAllText($path)
    $rest = Get-SshLabUserConfigWithoutBlock $current
    if ($rest -ceq $current) { return }
    if ($rest.Length -eq 0) { Remove-Item -LiteralPath $path } else { Write-SshLabFileAtomically $path $rest }
}

<#
.SYNOPSIS
    A folder for the server on an XFS with reflink (where cp --reflink=always and FICLONE share blocks), beside the
    ext4 folders the other tests use (which stay: a server without reflink).
.DESCRIPTION
    The XFS is the libvirt lab's (Get-LabXfsFolder in OdaKvmLab.psm1: one loop device for both), so Remove-Lab tears it
    down; the server is this machine, so its folder is also a local path. Throws, saying why, when it cannot be mounted.
#>
function Get-LabSshXfsFolder {
    [CmdletBinding()]
    [OutputType([string])]
    param()
    Import-Module (Join-Path $PSScriptRoot 'OdaKvmLab.psm1')
    Get-LabXfsFolder -Name 'ssh'
}

<# .SYNOPSIS Bytes received on the loopback interface so far (/proc/net/dev): the difference around a copy is what crossed the wire. #>
function Get-LabLoopbackReceivedBytes {
    foreach ($line in [System.IO.File]::ReadAllLines('/proc/net/dev')) {
        $parts = $line.Split(':', 2)
        if ($parts.Count -eq 2 -and $parts[0].Trim() -eq 'lo') {
            return [long]($parts[1].Trim() -split '\s+')[0]
        }
    }
    throw 'No lo line in /proc/net/dev.'
}

Export-ModuleMember -Function Get-LabSshRoot, Start-LabSshd, Stop-LabSshd, Stop-LabSshSession, Set-LabSshClientConfig, Remove-LabSshClientConfig, Get-LabLoopbackReceivedBytes, Get-LabSshXfsFolder
