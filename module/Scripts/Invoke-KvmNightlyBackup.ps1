#!/usr/bin/env pwsh
<#
.SYNOPSIS
    The nightly job: backs up a list of VMs, applies the retention policy, writes a log of the run next to the
    backups, and exits non-zero when any VM failed.
.DESCRIPTION
    For each VM (names or wildcard patterns) the one-liner runs: Get-VmDisk | New-KvmDiskSnapshot | Copy-VmDisk |
    Invoke-BlockCommit | Move-OverlayToRetention. One VM's failure never stops the others: it is put back on its own
    disks, its set is marked Incomplete, and the run goes on. Then Remove-KvmBackup keeps the newest sets of each VM
    (-KeepLast, -KeepDays; never the newest Complete one) and removes retained overlays older than -OverlayKeepDays.
    With -TestLatest, each VM's newest set is read back and checked (Test-KvmBackup; add -BootTest to boot it).

    The log (a transcript, 0600) goes next to the backups: <Destination>/.odakvmbackup-logs/nightly-<UTC time>.log for
    a local destination; for an SSH destination (or a local folder that is missing), under /var/log/odakvmbackup on this host.

    Exit code: 0 when every VM was backed up (and tested, with -TestLatest); 1 when any VM failed (the log and the
    summary at its end say which and why); 2 when the run itself could not start (the module or the log folder
    missing). A parameter pwsh itself refuses (missing, unknown, out of range) exits 1 before the script runs, with
    the reason on stderr: cron mails it. 143 or 129 when SIGTERM (systemctl stop, kill, timeout) or SIGHUP stopped the
    run: the VM being backed up was put back on its own disks first, as after Ctrl+C, and the 'OdaKvmBackup: ...' lines
    on stderr say so; the log then ends without its summary.
.EXAMPLE
    (Install-PSResource puts the module in a version folder: Get-Module -ListAvailable OdaKvmBackup shows it.)
    /usr/local/share/powershell/Modules/OdaKvmBackup/<version>/Scripts/Invoke-KvmNightlyBackup.ps1 -DomainName 'ora*,app01' -Destination /backup -RetentionPath /kvm/retencao -KeepLast 7

    The cron entry (as root, every night at 02:00):
        0 2 * * * /usr/local/bin/pwsh -NoProfile -File /usr/local/share/powershell/Modules/OdaKvmBackup/<version>/Scripts/Invoke-KvmNightlyBackup.ps1 -DomainName 'ora*' -Destination /backup -RetentionPath /kvm/retencao -KeepLast 7
.EXAMPLE
    A systemd timer instead of cron: /etc/systemd/system/kvm-backup.service

        [Service]
        Type=oneshot
        ExecStart=/usr/local/bin/pwsh -NoProfile -File /usr/local/share/powershell/Modules/OdaKvmBackup/<version>/Scripts/Invoke-KvmNightlyBackup.ps1 -DomainName 'ora*' -Destination root@backupsrv:/backup -RetentionPath /kvm/retencao
        # systemctl stop: SIGTERM to pwsh alone, and time for a VM's rollback before SIGKILL
        KillMode=mixed
        TimeoutStopSec=30min

    and /etc/systemd/system/kvm-backup.timer

        [Timer]
        OnCalendar=*-*-* 02:00:00
        Persistent=true
        [Install]
        WantedBy=timers.target

    then: systemctl enable --now kvm-backup.timer
#>
[CmdletBinding(PositionalBinding = $false)]
param(
    # VMs to back up: names as 'virsh list --all' shows them, or wildcard patterns. From cron (pwsh -File) give a
    # list as one comma-separated argument: -DomainName 'ora*,app01'.
    [Parameter(Mandatory)][string[]] $DomainName,
    # A local folder, an NFS mount, or [user@]host:/path on an SSH server.
    [Parameter(Mandatory)][string] $Destination,
    # Where the overlays (what the VMs wrote during their backup) are kept.
    [Parameter(Mandatory)][string] $RetentionPath,
    # Sets kept per VM (the newest Complete one is always kept).
    [ValidateRange(0, 10000)][int] $KeepLast = 7,
    # Sets younger than this many days are kept too (0: only -KeepLast counts).
    [ValidateRange(0, 36500)][int] $KeepDays = 0,
    # Retained overlays older than this many days are removed.
    [ValidateRange(0, 36500)][int] $OverlayKeepDays = 7,
    # Reads back the newest set of each VM and checks it (Test-KvmBackup).
    [switch] $TestLatest,
    # With -TestLatest: also boots each newest set in a throw-away VM (Test-KvmBackup -Boot).
    [switch] $BootTest,
    # Where the log goes (default: next to the backups, see the description).
    [string] $LogPath,
    # The module to use: its name or the path of its manifest.
    [string] $Module = 'OdaKvmBackup'
)

$ErrorActionPreference = 'Stop'
# pwsh -File passes 'a,b' as one string, not as an array.
$DomainName = @($DomainName | ForEach-Object { $_ -split ',' } | ForEach-Object Trim | Where-Object { $_ })
try {
    Import-Module $Module
    $stamp = [DateTime]::UtcNow.ToString('yyyyMMdd-HHmmss')
    # A folder here gets the log beside its backups; anything else (an SSH destination, a folder that is missing and
    # that the backup will report) logs on this host.
    $local = Test-Path -LiteralPath $Destination -PathType Container
    if (-not $LogPath) {
        $folder = if ($local) { Join-Path $Destination '.odakvmbackup-logs' } else { '/var/log/odakvmbackup' }
        $LogPath = Join-Path $folder "nightly-$stamp.log"
    }
    # The log names every VM and disk: private, like the backups.
    $logFolder = Split-Path -Parent $LogPath
    if (-not (Test-Path -LiteralPath $logFolder)) {
        $null = New-Item -ItemType Directory -Path $logFolder
        [IO.File]::SetUnixFileMode($logFolder, [IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
    }
    [IO.File]::WriteAllText($LogPath, '')
    [IO.File]::SetUnixFileMode($LogPath, [IO.UnixFileMode]'UserRead, UserWrite')
    $null = Start-Transcript -LiteralPath $LogPath -Append
}
catch {
    Write-Error "The nightly backup could not start: $($_.Exception.Message)" -ErrorAction Continue
    exit 2
}

$ErrorActionPreference = 'Continue'
$started = Get-Date
Write-Host "OdaKvmBackup nightly run on $([Environment]::MachineName), $($started.ToString('u')): $($DomainName -join ', ') to $Destination"
$failures = [System.Collections.Generic.List[object]]::new()
function Add-Failure($ErrorRecords, [string] $Stage) {
    foreach ($e in $ErrorRecords) {
        $vm = if ($e.TargetObject) { "$($e.TargetObject)" } else { '(the run)' }
        $failures.Add([pscustomobject]@{ VM = $vm; Stage = $Stage; ErrorId = ($e.FullyQualifiedErrorId -split ',')[0]; Message = $e.ToString() })
    }
}

# 1. The backups: one pipeline for all the VMs; a VM that fails is put back and the others go on.
$errs = @()
$objects = @($DomainName | Get-VmDisk -ErrorVariable +errs -ErrorAction SilentlyContinue |
        New-KvmDiskSnapshot -ErrorVariable +errs -ErrorAction SilentlyContinue |
        Copy-VmDisk -Destination $Destination -ErrorVariable +errs -ErrorAction SilentlyContinue |
        Invoke-BlockCommit -ErrorVariable +errs -ErrorAction SilentlyContinue |
        Move-OverlayToRetention -Path $RetentionPath -ErrorVariable +errs -ErrorAction SilentlyContinue)
Add-Failure $errs 'backup'
$objects | Format-Table -AutoSize | Out-String -Width 200 | Write-Host

# 2. Retention: sets beyond the policy, and overlays kept long enough.
$errs = @()
Remove-KvmBackup -Path $Destination -KeepLast $KeepLast -KeepDays $KeepDays -Confirm:$false -ErrorVariable +errs -ErrorAction SilentlyContinue -Verbose 4>&1 |
    ForEach-Object { Write-Host "retention: $_" }
Remove-KvmBackup -RetentionPath $RetentionPath -OverlayKeepDays $OverlayKeepDays -Confirm:$false -ErrorVariable +errs -ErrorAction SilentlyContinue -Verbose 4>&1 |
    ForEach-Object { Write-Host "retention: $_" }
Add-Failure $errs 'retention'

# 3. The proof: each VM's newest set read back (and booted) where asked.
if ($TestLatest) {
    $errs = @()
    $vms = @($objects.DomainName | Sort-Object -Unique)
    $results = @(Get-KvmBackup -Path $Destination -DomainName $vms -Latest -ErrorVariable +errs -ErrorAction SilentlyContinue |
            Test-KvmBackup -Boot:$BootTest -ErrorVariable +errs -ErrorAction SilentlyContinue)
    $results | Format-Table -AutoSize | Out-String -Width 200 | Write-Host
    Add-Failure $errs 'test'
}

# The summary a reader of the log looks for first.
$done = @($objects | Where-Object SetStatus -eq 'Complete' | ForEach-Object DomainName | Sort-Object -Unique)
$failed = @($failures.VM | Sort-Object -Unique)
Write-Host ''
Write-Host ("Backed up: {0}" -f $(if ($done) { $done -join ', ' } else { 'none' }))
Write-Host ("Failed:    {0}" -f $(if ($failed) { $failed -join ', ' } else { 'none' }))
foreach ($f in $failures) { Write-Host ("  {0} ({1}, {2}): {3}" -f $f.VM, $f.Stage, $f.ErrorId, $f.Message) }
Write-Host ("Took {0:0} s. Log: {1}" -f ((Get-Date) - $started).TotalSeconds, $LogPath)
$null = Stop-Transcript
exit $(if ($failures.Count -gt 0) { 1 } else { 0 })
