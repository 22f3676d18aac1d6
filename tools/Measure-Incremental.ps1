#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Measures chain-free incremental backups (issue 15) against rsync by hand and against today's full copies, side by
    side, and prints the figures.
.DESCRIPTION
    Prints figures; asserts nothing about them. On lab_incbench, a lab VM with a qcow2 boot disk of -BootGiB and a fully
    allocated raw vdisk of -VdiskGiB, each -DataFraction random data (ext4 file /data.bin), backed up over the lab's
    real sshd on 127.0.0.1:2222 (alias odakvm-backup) into a folder on the lab's XFS with reflink
    (Get-LabSshXfsFolder). For each round and each change pattern:
      1. the first, full backup: this module's one-liner and today's module's (-BaselineModulePath, by default main at
         -BaselineCommit, built once under /var/tmp/okb-base), each into an empty folder, alternating which goes first;
      2. the change, written by the guest (guest-exec through its agent, the VM running):
           Contiguous  -ChangeFraction of each disk's data.bin rewritten in place, one run of random bytes at a
                       random offset (dd bs=1M conv=notrunc, then sync)
           Scattered   -ScatteredWrites random 8 KiB writes at random 8 KiB-aligned offsets of the vdisk's data.bin
                       (one dd each, then sync)
         (the lab guest's own writer adds its ticks and 512 KiB blobs all the while, as any live VM would);
      3. the second backup: this module's one-liner (incremental: the first set is its base) against the same backup
         by hand: ssh server cp --reflink=always of the previous rsync copy, virsh snapshot-create-as --disk-only
         --atomic --quiesce, rsync --inplace --no-whole-file --ignore-times of each frozen file over ssh (without
         --ignore-times rsync skipped the vdisk in 2 of 4 trial runs: see the script), virsh blockcommit --active
         --pivot per disk, snapshot-delete --metadata, overlays deleted. The previous rsync copy is made by the
         harness (untimed) as a reflink of the first set's copies: the same bytes an earlier rsync would have left.
    Every backup runs in a fresh process (pwsh or bash: start-up and JIT count) with the page cache dropped before it.
    What each backup is measured by:
      wire     bytes received on lo while it ran (/proc/net/dev: both directions of the ssh connection, TCP/IP
               headers included; no iptables/nft here to count port 2222 alone: the rate of lo with nothing running
               is printed beside it)
      stored   growth of the used space of the XFS (df after sync), the set's verification done, XFS's speculative
               and copy-on-write preallocations freed (xfs_spaceman prealloc -s) before and after; 'reserved': the
               growth before they were freed
      differ   the bytes of 64 KiB blocks that differ between the base copy and the new copy, counted by reading the
               two files on the server (a harness comparison, independent of the module's digest lists)
      overlay  per disk, snapshot to pivot: the module's TimeOnOverlay; by hand, the times the script prints
      floor    per disk, cat FILE > /dev/null of the VM's disk file, caches dropped
      bare     per disk, snapshot to pivot of the design's procedure with nothing copied: snapshot-create-as
               (overlays named by --diskspec), then per disk, vda first, cat of the frozen file to /dev/null (or no
               read at all) and blockcommit --active --pivot; caches dropped before it. What any tool that follows
               the procedure spends on an overlay at the least: the pivot's own cost (virsh polls the job every
               500 ms) is there even with no read
      re-read  the server's read of the previous rsync copy (cat, caches dropped), which rsync also does: the
               server's share of rsync's time (on the lab the server shares the host's disk)
    Medians over -Rounds.
    Called by ./build.ps1 -Task BenchIncremental [-BenchRounds N] after Build and Lab, under the lab lock.
.EXAMPLE
    ./tools/Measure-Incremental.ps1 -ModulePath ./out/OdaKvmBackup/OdaKvmBackup.psd1 -Rounds 1 -BootGiB 1 -VdiskGiB 4
    A quick run while developing.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ModulePath,
    # Today's module, for the first backup's comparison; default: built from -BaselineCommit into /var/tmp/okb-base.
    [string] $BaselineModulePath,
    [string] $BaselineCommit = '99b89e9',
    [ValidateRange(1, 100)][int] $Rounds = 3,
    [ValidateRange(0.25, 1024)][double] $BootGiB = 4,
    [ValidateRange(0.25, 1024)][double] $VdiskGiB = 16,
    [ValidateRange(0.01, 0.9)][double] $DataFraction = 0.25,
    [ValidateRange(0.001, 1)][double] $ChangeFraction = 0.05,
    [ValidateRange(1, 100000)][int] $ScatteredWrites = 2000,
    [ValidateSet('Contiguous', 'Scattered')][string[]] $Pattern = @('Contiguous', 'Scattered'),
    [string] $ScratchRoot = '/var/tmp',
    # Leaves the VM, its disks and the sets in place (for debugging); they take the disks' size again on the XFS.
    [switch] $Keep
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ModulePath = (Resolve-Path -LiteralPath $ModulePath).Path
$Repo = Split-Path $PSScriptRoot
Import-Module (Join-Path $Repo 'tests/Lab/OdaKvmLab.psm1') -Force -Verbose:$false
Import-Module (Join-Path $Repo 'tests/Lab/OdaKvmSshLab.psm1') -Force -Verbose:$false
$Pwsh = @([Environment]::ProcessPath, [Environment]::GetCommandLineArgs()[0])   # this pwsh: dotnet + pwsh.dll
$Vm = 'lab_incbench'
$Alias = 'odakvm-backup'
$scratch = Join-Path $ScratchRoot ("odakvm-incbench-{0}" -f [guid]::NewGuid().ToString('N').Substring(0, 8))
$samples = [System.Collections.Generic.List[object]]::new()

# ---------------------------------------------------------------- helpers

function Invoke-Tool([string] $Program, [string[]] $Arguments) {
    $out = & $Program @Arguments 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { throw "$Program $($Arguments -join ' ') failed with exit code ${LASTEXITCODE}: $($out.Trim())" }
    $out
}

# The whole page cache is dropped before every timed run (as the issue asks); where that is refused, each file's own
# pages are (posix_fadvise DONTNEED through dd iflag=nocache count=0) and the output says so.
$script:CacheNote = $null
function Clear-PageCache([string[]] $Files = @()) {
    & sync
    try {
        [System.IO.File]::WriteAllText('/proc/sys/vm/drop_caches', "3`n")
        if (-not $script:CacheNote) { $script:CacheNote = 'sync; echo 3 > /proc/sys/vm/drop_caches before every timed run (and before every cat)' }
    }
    catch {
        $script:CacheNote = "the page cache could NOT be dropped ($($_.Exception.Message)): only the files' own pages were (dd iflag=nocache count=0)"
        foreach ($f in $Files) { & dd "if=$f" iflag=nocache count=0 status=none }
    }
}

# Times a command line as a whole (process start included).
function Measure-Process([string[]] $CommandLine) {
    $psi = [Diagnostics.ProcessStartInfo]::new($CommandLine[0])
    foreach ($a in $CommandLine[1..($CommandLine.Count - 1)]) { $psi.ArgumentList.Add($a) }
    $psi.RedirectStandardOutput = $true; $psi.RedirectStandardError = $true; $psi.UseShellExecute = $false
    $startUtc = [DateTime]::UtcNow
    $watch = [Diagnostics.Stopwatch]::StartNew()
    $p = [Diagnostics.Process]::Start($psi)
    $out = $p.StandardOutput.ReadToEndAsync(); $err = $p.StandardError.ReadToEndAsync()
    $p.WaitForExit()
    $watch.Stop()
    if ($p.ExitCode -ne 0) { throw "'$($CommandLine -join ' ')' failed ($($p.ExitCode)): $($err.Result)$($out.Result)" }
    [pscustomobject]@{ Seconds = $watch.Elapsed.TotalSeconds; Output = $out.Result; Error = $err.Result; StartUtc = $startUtc }
}

function Get-UsedBytes { & sync -f $XfsMount; [long]((& df -B1 --output=used $XfsMount | Select-Object -Last 1).Trim()) }

# XFS reserves space beyond what a file holds (speculative preallocation past EOF, copy-on-write extents of a reflinked
# file) and gives it back minutes later: freed now (xfs_spaceman prealloc -s), so "stored" counts what stays.
function Clear-XfsPreallocation { & xfs_spaceman -c 'prealloc -s -m 0' $XfsMount; if ($LASTEXITCODE) { throw "xfs_spaceman prealloc on $XfsMount failed" } }

# XFS frees a deleted file's blocks in the background: before a measurement, wait until the used space stands still,
# or a set deleted just before would count against the next backup.
function Get-SettledUsedBytes {
    Clear-XfsPreallocation
    $used = Get-UsedBytes
    for ($i = 0; $i -lt 20; $i++) {
        Start-Sleep -Milliseconds 500
        $now = Get-UsedBytes
        if ($now -eq $used) { return $now }
        $used = $now
    }
    $used
}

# What a backup costs, measured around it: wire (lo), server space (df), time (fresh process).
function Measure-BackupRun([string[]] $CommandLine) {
    $used = Get-SettledUsedBytes
    Clear-PageCache $VmDisks
    $lo = Get-LabLoopbackReceivedBytes
    $r = Measure-Process $CommandLine
    $wire = (Get-LabLoopbackReceivedBytes) - $lo
    $reserved = (Get-UsedBytes) - $used
    Clear-XfsPreallocation
    [pscustomobject]@{ Seconds = $r.Seconds; Output = $r.Output; Error = $r.Error; StartUtc = $r.StartUtc; Wire = $wire; Reserved = $reserved; Stored = (Get-UsedBytes) - $used }
}

function Add-Sample([string] $Case, [string] $Method, [int] $Round, [hashtable] $Figures) {
    $samples.Add([pscustomobject](@{ Case = $Case; Method = $Method; Round = $Round } + $Figures))
    # each figure as it is measured, so that a run cut short still shows what it got
    $shown = $Figures.Keys | Where-Object { $_ -notin 'Set', 'Manifest' } | Sort-Object | ForEach-Object { '{0} {1}' -f $_, $(if ($_ -in 'Wire', 'Stored', 'Reserved') { '{0:N1} MiB' -f ($Figures[$_] / 1MB) } else { '{0:0.00}' -f $Figures[$_] }) }
    Write-Host "    $Case, $Method, round ${Round}: $($shown -join ', ')"
}

# Runs the methods of one round, each round starting with the next one (A B, B A, A B ...).
function Invoke-Rotated([int] $Round, [scriptblock[]] $Methods) {
    for ($i = 0; $i -lt $Methods.Count; $i++) { . $Methods[($Round - 1 + $i) % $Methods.Count] }
}

function Get-Median([double[]] $Values) {
    $s = @($Values | Sort-Object); $n = $s.Count
    if ($n -eq 0) { return [double]::NaN }
    if ($n % 2) { $s[($n - 1) / 2] } else { ($s[$n / 2 - 1] + $s[$n / 2]) / 2 }
}

# 64 KiB blocks that differ between two files (a shorter file reads as zeros past its end), read in 4 MiB chunks.
Add-Type -TypeDefinition @'
using System;
using System.IO;
public static class OdaKvmBenchBlockDiff {
    static int Fill(Stream s, byte[] buffer) {
        int total = 0, n;
        while (total < buffer.Length && (n = s.Read(buffer, total, buffer.Length - total)) > 0) total += n;
        Array.Clear(buffer, total, buffer.Length - total);
        return total;
    }
    public static long DifferentBlocks(string a, string b, int block) {
        const int chunk = 4 << 20;
        var x = new byte[chunk]; var y = new byte[chunk];
        long differ = 0;
        using var fa = new FileStream(a, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
        using var fb = new FileStream(b, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
        while (true) {
            int na = Fill(fa, x), nb = Fill(fb, y), n = Math.Max(na, nb);
            if (n == 0) return differ;
            for (int at = 0; at < n; at += block) {
                int len = Math.Min(block, n - at);
                if (!x.AsSpan(at, len).SequenceEqual(y.AsSpan(at, len))) differ++;
            }
        }
    }
}
'@
$Block = 64KB
function Get-DifferBytes([string] $Base, [string] $New) { [OdaKvmBenchBlockDiff]::DifferentBlocks($Base, $New, $Block) * $Block }

# Today's module: main at -BaselineCommit, built once with its own build.ps1 into /var/tmp/okb-base/<commit>.
function Get-BaselineModule {
    if ($BaselineModulePath) { return (Resolve-Path -LiteralPath $BaselineModulePath).Path }
    $folder = Join-Path '/var/tmp/okb-base' $BaselineCommit
    $psd1 = Join-Path $folder 'OdaKvmBackup/OdaKvmBackup.psd1'
    if (Test-Path -LiteralPath $psd1) { return $psd1 }
    $src = Join-Path $folder 'src'
    if (Test-Path -LiteralPath $src) { Remove-Item -Recurse -Force -LiteralPath $src }
    New-Item -ItemType Directory -Force $src | Out-Null
    & bash -c 'git -C "$1" archive "$2" | tar -x -C "$3"' bash $Repo $BaselineCommit $src
    if ($LASTEXITCODE) { throw "git archive $BaselineCommit failed" }
    Push-Location $src
    try {
        & dotnet tool restore | Out-Null
        & dotnet pwsh -NoProfile -File ./build.ps1 -Task Build | Out-Null
        if ($LASTEXITCODE) { throw "Building today's module ($BaselineCommit) in $src failed" }
    }
    finally { Pop-Location }
    Move-Item -LiteralPath (Join-Path $src 'out/OdaKvmBackup') -Destination (Join-Path $folder 'OdaKvmBackup')
    Remove-Item -Recurse -Force -LiteralPath $src
    $psd1
}

# ---------------------------------------------------------------- the backups

# The README's one-liner in a fresh pwsh; returns what it printed per disk and the set's manifest.
function Invoke-OneLiner([string] $Module, [string] $Folder, [string] $Case, [string] $Method, [int] $Round) {
    $ret = Join-Path $scratch "retention/$([guid]::NewGuid().ToString('N'))"
    New-Item -ItemType Directory -Force $ret | Out-Null
    # The one-liner's -Verbose lines, stamped as they arrive, go to a file: where its time went (Get-Timeline).
    $timeline = Join-Path $scratch "timeline-$([guid]::NewGuid().ToString('N')).txt"
    $script = "Import-Module '$Module'; `$VerbosePreference = 'Continue'; `$t = [System.Collections.Generic.List[string]]::new(); `$o = & { Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination '${Alias}:$Folder' | Invoke-BlockCommit | Move-OverlayToRetention -Path '$ret' } 4>&1 | ForEach-Object { if (`$_ -is [System.Management.Automation.VerboseRecord]) { `$t.Add([DateTime]::UtcNow.ToString('o') + ' ' + (`$_.Message -replace '\s*\n\s*', ' ')) } else { [pscustomobject]@{ Target = `$_.Target; OnOverlay = `$_.TimeOnOverlay.TotalSeconds; Copy = `$_.CopyTime.TotalSeconds; Commit = `$_.CommitTime.TotalSeconds; Status = `$_.SetStatus; RunId = `$_.RunId } } }; `$t.Add([DateTime]::UtcNow.ToString('o') + ' END'); [System.IO.File]::WriteAllLines('$timeline', `$t); `$o | ConvertTo-Json -Compress"
    $m = Measure-BackupRun ($Pwsh + @('-NoProfile', '-Command', $script))
    Remove-Item -Recurse -Force -LiteralPath $ret
    $disks = @($m.Output | ConvertFrom-Json)
    if ($disks.Count -ne 2 -or @($disks | Where-Object Status -NotIn 'Complete', 'InProgress').Count) { throw "$Method did not complete: $($m.Output)" }
    # The whole backup ends when its set is Complete on the server, its verification included: should the command
    # return before that, the wait counts (and an Incomplete set is no figure).
    $set = Join-Path $Folder "$Vm/$($disks[0].RunId)"
    $watch = [Diagnostics.Stopwatch]::StartNew()
    while ($true) {
        $manifest = Get-Content -Raw -LiteralPath (Join-Path $set 'backup.json') | ConvertFrom-Json
        if ($manifest.Status -ne 'InProgress') { break }
        if ($watch.Elapsed.TotalMinutes -gt 10) { throw "$Method returned, but its set $set is still InProgress 10 minutes later." }
        Start-Sleep -Milliseconds 200
    }
    if ($manifest.Status -ne 'Complete') { throw "$Method returned, but its set $set is $($manifest.Status), not Complete: $($manifest.Reason)" }
    $waited = if ($watch.Elapsed.TotalSeconds -gt 0.3) { $watch.Elapsed.TotalSeconds } else { 0 }
    Assert-Clean $Method
    $figures = @{ Seconds = $m.Seconds + $waited; Waited = $waited; Wire = $m.Wire; Stored = $m.Stored; Reserved = $m.Reserved; Set = $set; Manifest = $manifest }
    foreach ($d in $disks) { $figures["Overlay $($d.Target)"] = [double]$d.OnOverlay; $figures["Copy $($d.Target)"] = [double]$d.Copy; $figures["Commit $($d.Target)"] = [double]$d.Commit }
    foreach ($phase in (Get-Timeline $timeline $m.StartUtc $disks).GetEnumerator()) { $figures[$phase.Key] = $phase.Value }
    Remove-Item -LiteralPath $timeline
    Add-Sample $Case $Method $Round $figures
    $samples[-1]
}

# Where a one-liner's time went, from its stamped -Verbose lines: 'Before snapshot' from the process's start to the
# snapshot command (pwsh, the module, the checks, the base's read-back on the server), 'Snapshot' that command (the
# guest's freeze), 'After pivots' from the last disk's pivot (snapshot + its time on the overlay) to the end (the
# verification on the server, the manifest).
function Get-Timeline([string] $Path, [datetime] $StartUtc, [object[]] $Disks) {
    $lines = foreach ($l in [IO.File]::ReadAllLines($Path)) {
        $at, $text = $l -split ' ', 2
        [pscustomobject]@{ At = [datetime]::Parse($at, [Globalization.CultureInfo]::InvariantCulture, 'RoundtripKind'); Text = $text }
    }
    $snapshotIndex = [array]::FindIndex([object[]]$lines, [Predicate[object]] { param($x) $x.Text -like 'Running: *snapshot-create-as*' })
    if ($snapshotIndex -lt 0) { throw "No snapshot command in the one-liner's verbose output ($Path)." }
    $snapshotCall = $lines[$snapshotIndex].At
    $snapshotDone = $lines[$snapshotIndex + 1].At
    $lastPivot = $snapshotDone.AddSeconds(($Disks | Measure-Object -Property OnOverlay -Maximum).Maximum)
    $end = $lines[-1].At
    @{
        'Before snapshot' = ($snapshotCall - $StartUtc).TotalSeconds
        'Snapshot' = ($snapshotDone - $snapshotCall).TotalSeconds
        'After pivots' = ($end - $lastPivot).TotalSeconds
    }
}

# The second backup by hand; its script prints when each step ended.
$ByHand = @'
set -e -o pipefail
export LIBVIRT_DEFAULT_URI=qemu:///system
vm=$1; alias=$2; prev=$3; new=$4; snap=BENCH_RSYNC.TEMP
now() { date +%s.%N; }
ssh -o BatchMode=yes "$alias" "mkdir -p '$new' && cp --reflink=always '$prev'/* '$new'/"
echo "clone $(now)"
disks=$(virsh -q domblklist "$vm" | awk '$2 != "-" {print $1 "=" $2}')   # target=file: frozen once snapshotted
virsh snapshot-create-as --domain "$vm" --name $snap --disk-only --atomic --quiesce >/dev/null
echo "snapshot $(now)"
for d in $disks; do
  # --ignore-times: rsync's quick check compares whole seconds, and a guest that writes all the time gives its frozen
  # disk the same second as the clone made just before: without it rsync skips the disk and copies nothing
  rsync --inplace --no-whole-file --ignore-times --stats -e 'ssh -o BatchMode=yes' "${d#*=}" "$alias:$new/${d%%=*}" | sed "s/^/${d%%=*}: /" >&2
  echo "rsync ${d%%=*} $(now)"
done
overlays=$(virsh -q domblklist "$vm" | awk '$2 != "-" {print $2}')
for d in $disks; do virsh blockcommit "$vm" "${d%%=*}" --active --pivot >/dev/null; echo "pivot ${d%%=*} $(now)"; done
virsh snapshot-delete --domain "$vm" $snap --metadata >/dev/null
rm -f -- $overlays
echo "end $(now)"
'@

# The "step seconds.nanoseconds" lines a bash procedure prints (its now()), by step.
function Read-Stamps([string] $Output) {
    $at = @{}
    foreach ($line in $Output.Trim() -split "`n") { $f = $line -split ' '; $at[($f[0..($f.Count - 2)] -join ' ')] = [double]$f[-1] }
    $at
}

function Invoke-ByHand([string] $Previous, [string] $New, [string] $Case, [int] $Round) {
    $m = Measure-BackupRun @('bash', '-c', $ByHand, 'byhand', $Vm, $Alias, $Previous, $New)
    Assert-Clean 'the backup by hand'
    $at = Read-Stamps $m.Output
    Write-Verbose "rsync --stats:`n$($m.Error)"
    $figures = @{ Seconds = $m.Seconds; Wire = $m.Wire; Stored = $m.Stored; Reserved = $m.Reserved }
    foreach ($t in $Targets) {
        $literal = [regex]::Match($m.Error, "(?m)^${t}: Literal data: ([\d,.]+) bytes")
        if ($literal.Success) { $figures["Literal $t"] = [double]($literal.Groups[1].Value -replace '[,.]', '') }
        # rsync's quick check (same size and time) would skip a file: then there is no figure of rsync's to show
        if ($m.Error -match "(?m)^${t}: Number of regular files transferred: 0") { throw "rsync skipped $t (its quick check found the same size and time): the backup by hand did not copy it." }
        $figures["Overlay $t"] = $at["pivot $t"] - $at['snapshot']
        $figures["Rsync $t"] = $at["rsync $t"] - $(if ($t -eq $Targets[0]) { $at['snapshot'] } else { $at["rsync $($Targets[$Targets.IndexOf($t) - 1])"] })
    }
    Add-Sample $Case 'by hand: cp --reflink + rsync --inplace --no-whole-file -I' $Round $figures
}

# The design's procedure bare, for reference: the snapshot, then per disk (vda first) the frozen file read once by cat
# (-Read cat) or not at all (-Read none), and blockcommit --active --pivot at once; nothing copied, compared or kept.
# What any tool that follows the procedure spends on an overlay at the least. The overlays are named (--diskspec), so
# no virsh call stands between the snapshot and the first read.
$Bare = @'
set -e -o pipefail
export LIBVIRT_DEFAULT_URI=qemu:///system
vm=$1; read=$2; dir=$3; snap=BENCH_BARE.TEMP
now() { date +%s.%N; }
disks=$(virsh -q domblklist "$vm" | awk '$2 != "-" {print $1 "=" $2}')
specs=""; overlays=""
for d in $disks; do specs="$specs --diskspec ${d%%=*},snapshot=external,file=$dir/${d%%=*}.bare"; overlays="$overlays $dir/${d%%=*}.bare"; done
virsh snapshot-create-as --domain "$vm" --name $snap --disk-only --atomic --quiesce $specs >/dev/null
echo "snapshot $(now)"
for d in $disks; do
  if [ "$read" = cat ]; then cat "${d#*=}" > /dev/null; fi
  virsh blockcommit "$vm" "${d%%=*}" --active --pivot >/dev/null
  echo "pivot ${d%%=*} $(now)"
done
virsh snapshot-delete --domain "$vm" $snap --metadata >/dev/null
rm -f -- $overlays
'@

function Invoke-Bare([string] $Read, [string] $Case, [int] $Round) {
    Clear-PageCache $VmDisks
    $m = Measure-Process @('bash', '-c', $Bare, 'bare', $Vm, $Read, (Split-Path $VmDisks[0]))
    Assert-Clean "the procedure bare ($Read)"
    $at = Read-Stamps $m.Output
    $figures = @{}
    foreach ($t in $Targets) { $figures["Overlay $t"] = $at["pivot $t"] - $at['snapshot'] }
    Add-Sample $Case "procedure bare: snapshot, $(if ($Read -eq 'cat') { 'cat' } else { 'no read' }), blockcommit --pivot" $Round $figures
}

# No snapshot metadata and no overlay left: the VM is on its own disks again.
function Assert-Clean([string] $Who) {
    foreach ($view in @(@(), @('--inactive'))) {
        $xml = [xml](Invoke-Tool virsh (@('-c', 'qemu:///system', 'dumpxml', $Vm) + $view))
        foreach ($disk in $xml.domain.devices.disk) { if ($disk.device -eq 'disk' -and $disk.SelectSingleNode('backingStore/source')) { throw "$Vm is still on an overlay after $Who" } }
    }
    if ((Invoke-Tool virsh @('-c', 'qemu:///system', 'snapshot-list', $Vm, '--name')).Trim()) { throw "$Vm still has snapshot metadata after $Who" }
}

# ---------------------------------------------------------------- the changes (written by the guest)

function Invoke-Guest([string] $Command) {
    $r = Invoke-LabGuestCommand -DomainName $Vm -Command $Command -TimeoutSeconds 3600
    if ($r.ExitCode -ne 0) { throw "guest command failed ($($r.ExitCode)): $($r.StdErr) $Command" }
}

function Write-Change([string] $Name, [int] $Round) {
    $random = [Random]::new(1000 * $Round + $Name.Length)
    $watch = [Diagnostics.Stopwatch]::StartNew()
    if ($Name -eq 'Contiguous') {
        foreach ($disk in 'a', 'b') {
            $mib = $DataMiB[$disk]
            $count = [long][math]::Max(1, [math]::Floor($mib * $ChangeFraction))
            $seek = [long]($random.NextDouble() * ($mib - $count))
            Invoke-Guest "dd if=/dev/urandom of=/mnt/$disk/data.bin bs=1M count=$count seek=$seek conv=notrunc 2>/dev/null && sync"
        }
        $what = '{0:P0} of each data.bin rewritten in one run ({1} + {2} MiB)' -f $ChangeFraction, [math]::Floor($DataMiB.a * $ChangeFraction), [math]::Floor($DataMiB.b * $ChangeFraction)
    }
    else {
        $blocks = [long]($DataMiB.b * 128)   # 8 KiB blocks in the vdisk's data.bin
        $offsets = for ($i = 0; $i -lt $ScatteredWrites; $i++) { [long]($random.NextDouble() * $blocks) }
        Invoke-Guest "for o in $($offsets -join ' '); do dd if=/dev/urandom of=/mnt/b/data.bin bs=8k count=1 seek=`$o conv=notrunc 2>/dev/null || exit 1; done; sync"
        $what = "$ScatteredWrites random 8 KiB writes into the vdisk's data.bin ($($DataMiB.b) MiB)"
    }
    Write-Host ("    change: {0}, written by the guest in {1:0.0} s" -f $what, $watch.Elapsed.TotalSeconds)
    $what
}

# ---------------------------------------------------------------- run

$Baseline = Get-BaselineModule
New-Item -ItemType Directory -Force $scratch | Out-Null
$load = ((Get-Content /proc/loadavg) -split ' ')[0..2] -join ' '
$cpu = ((Get-Content /proc/cpuinfo | Where-Object { $_ -like 'model name*' } | Select-Object -First 1) -split ':', 2)[1].Trim()
Write-Host "OdaKvmBackup incremental benchmark, $Rounds round(s), $(Get-Date -Format 'yyyy-MM-dd HH:mm:ss')"
Write-Host ("Machine: nproc {0}, {1}{2}, {3:0.0} GiB RAM; load average at start {4}" -f (& nproc), $cpu, $(if (Select-String -Quiet -Pattern '\bsha_ni\b' -Path /proc/cpuinfo) { ' (SHA extensions)' }), ([long](((Get-Content /proc/meminfo -TotalCount 1) -split '\s+')[1]) / 1MB), $load)
Write-Host ("Versions: {0}; {1}; {2}; {3}; pwsh {4}" -f ((& virsh --version) -join ''), (& qemu-img --version | Select-Object -First 1), (& rsync --version | Select-Object -First 1), ((& ssh -V 2>&1) -join ''), $PSVersionTable.PSVersion)
Write-Host "Module measured: $ModulePath (commit $((& git -C $Repo rev-parse --short HEAD)))$(if (& git -C $Repo status --porcelain) { ' with uncommitted changes' }); today's: $Baseline"
$others = @((Invoke-Tool virsh @('-c', 'qemu:///system', 'list', '--name')) -split "`n" | ForEach-Object Trim | Where-Object { $_ -and $_ -ne $Vm })
foreach ($other in $others) { Invoke-LabVirsh @('destroy', $other) -AllowFailure | Out-Null }
Write-Host "Other VMs shut off for the bench: $(if ($others) { $others -join ', ' } else { 'none were running' })"

# The host's disk is shared: the VM's disks (the vdisk fully allocated) and, at the peak, two full sets on the XFS
# (whose sparse image lies on the same disk) must fit with room to spare, or the run does not start.
$need = (1.1 * $BootGiB * $DataFraction + $VdiskGiB + 2 * 1.1 * ($BootGiB + $VdiskGiB) * $DataFraction + 2) * 1GB
$free = [long]((& df -B1 --output=avail (Get-LabRoot) | Select-Object -Last 1).Trim())
if ($free -lt $need) { throw ("The bench needs about {0:N1} GiB free on the disk of {1}; it has {2:N1} GiB. Free some space or use smaller -BootGiB/-VdiskGiB." -f ($need / 1GB), (Get-LabRoot), ($free / 1GB)) }
Write-Host ("Disk space: {0:N1} GiB free, the bench takes up to about {1:N1} GiB" -f ($free / 1GB), ($need / 1GB))

$null = Start-LabSshd
$XfsFolder = Get-LabSshXfsFolder
$XfsMount = Mount-LabXfs
$benchFolder = Join-Path $XfsFolder 'incbench'
try {
    Reset-LabVm -Name $Vm -Layout BenchSized -BenchSize $BootGiB, $VdiskGiB, $DataFraction
    $script:VmDisks = @((Get-LabDiskPath -Name $Vm -Disk boot), (Get-LabDiskPath -Name $Vm -Disk data))
    $script:Targets = @('vda', 'vdb')
    $DiskBytes = @{ vda = [long]($BootGiB * 1GB); vdb = [long]($VdiskGiB * 1GB) }
    $DataMiB = @{ a = [long][math]::Floor($BootGiB * 1GB * $DataFraction / 1MB); b = [long][math]::Floor($VdiskGiB * 1GB * $DataFraction / 1MB) }
    $DiskName = @{ vda = 'vda: qcow2 {0:0.##} GiB, {1} MiB data' -f $BootGiB, $DataMiB.a; vdb = 'vdb: raw {0:0.##} GiB allocated, {1} MiB data' -f $VdiskGiB, $DataMiB.b }
    # The lo counter counts everything on loopback: its rate with nothing of ours running, for comparison.
    $lo = Get-LabLoopbackReceivedBytes; Start-Sleep -Seconds 5; $loRate = ((Get-LabLoopbackReceivedBytes) - $lo) / 5
    Write-Host ("Wire counter: lo received bytes (/proc/net/dev); with no backup running lo carried {0:N0} B/s" -f $loRate)
    $changes = @{}
    for ($r = 1; $r -le $Rounds; $r++) {
        foreach ($p in $Pattern) {
            Write-Host "  round $r, $p"
            $tag = Join-Path $benchFolder "r$r-$p"
            $ours = Join-Path $tag 'ours'; $today = Join-Path $tag 'today'; $prev = Join-Path $tag 'rsync/previous'; $new = Join-Path $tag 'rsync/new'
            foreach ($f in $ours, $today, (Split-Path $prev)) {
                New-Item -ItemType Directory -Force $f | Out-Null
                [System.IO.File]::SetUnixFileMode($f, [System.IO.UnixFileMode]'UserRead, UserWrite, UserExecute')
            }
            # 1. the first backup: this module against today's, each into an empty folder
            $first = $null
            Invoke-Rotated $r @(
                { $script:first = Invoke-OneLiner $ModulePath $ours "first backup ($p)" 'this module (full: no base yet)' $r },
                {
                    # today's module failing is a figure too (it is not what is measured here): said, and the run goes on
                    try { $null = Invoke-OneLiner $Baseline $today "first backup ($p)" "today's module ($BaselineCommit)" $r }
                    catch { Write-Host "    first backup ($p), today's module, round ${r}: FAILED: $($_.Exception.Message -replace '\s+', ' ')" }
                    if (-not $Keep) { Remove-Item -Recurse -Force -LiteralPath $today }
                })
            # the previous rsync copy: the first set's copies, reflinked (what an earlier rsync would have left)
            New-Item -ItemType Directory -Force $prev | Out-Null
            foreach ($d in $first.Manifest.Disks) { Invoke-Tool cp @('--reflink=always', (Join-Path $first.Set $d.File), (Join-Path $prev $d.Target)) | Out-Null }
            # 2. the change
            $changes[$p] = Write-Change $p $r
            # the floor: reading each disk file once, caches dropped
            foreach ($t in $Targets) {
                $file = $VmDisks[$Targets.IndexOf($t)]
                Clear-PageCache @($file)
                Add-Sample "floor ($p)" 'cat FILE > /dev/null' $r @{ "Cat $t" = (Measure-Process @('sh', '-c', 'cat "$1" > /dev/null', 'sh', $file)).Seconds }
            }
            Invoke-Rotated $r @({ Invoke-Bare 'cat' "bare ($p)" $r }, { Invoke-Bare 'none' "bare ($p)" $r })
            # 3. the second backup: this module (incremental) against rsync by hand
            Invoke-Rotated $r @(
                { $script:second = Invoke-OneLiner $ModulePath $ours "second backup ($p)" 'this module (incremental)' $r },
                { Invoke-ByHand $prev $new "second backup ($p)" $r })
            $second = $script:second; $hand = $samples | Where-Object { $_.Round -eq $r -and $_.Case -eq "second backup ($p)" -and $_.Method -like 'by hand*' }
            # the server's read of the base, which rsync does and the module does not (untimed in both)
            Clear-PageCache
            $hand | Add-Member -NotePropertyName ServerRead -NotePropertyValue (Measure-Process @('sh', '-c', 'cat "$1"/* > /dev/null', 'sh', $prev)).Seconds
            # what changed, in 64 KiB blocks, between the module's base copy and its new one (rsync's copies differ
            # from theirs by what the guest wrote between the two backups only: not counted again, to save the time)
            foreach ($t in $Targets) {
                $baseFile = Join-Path $first.Set ($first.Manifest.Disks | Where-Object Target -eq $t).File
                $newFile = Join-Path $second.Set ($second.Manifest.Disks | Where-Object Target -eq $t).File
                $second | Add-Member -NotePropertyName "Differ $t" -NotePropertyValue (Get-DifferBytes $baseFile $newFile)
            }
            if (-not $Keep) { Remove-Item -Recurse -Force -LiteralPath $tag }
        }
    }
}
finally {
    if (-not $Keep) {
        Invoke-LabVirsh @('destroy', $Vm) -AllowFailure | Out-Null
        Invoke-LabVirsh @('undefine', $Vm, '--snapshots-metadata') -AllowFailure | Out-Null
        foreach ($d in 'boot', 'data') { Remove-Item -Recurse -Force -ErrorAction SilentlyContinue -LiteralPath (Split-Path (Get-LabDiskPath -Name $Vm -Disk $d)) }
        Remove-Item -Recurse -Force -ErrorAction SilentlyContinue -LiteralPath $benchFolder
    }
    else { Write-Host "Kept: $Vm and its disks, the sets under $benchFolder" }
    Remove-Item -Recurse -Force -LiteralPath $scratch -ErrorAction SilentlyContinue
}

# ---------------------------------------------------------------- the figures
function Get-Figure([object[]] $Group, [string] $Name) {
    $values = @($Group | Where-Object { $_.PSObject.Properties[$Name] } | ForEach-Object { [double]$_.$Name })
    Get-Median $values
}
function Get-Of([string] $Case, [string] $Like) { @($samples | Where-Object { $_.Case -eq $Case -and $_.Method -like $Like }) }
$mib = { param($b) '{0:N1}' -f ($b / 1MB) }
$allowanceBytes = 0.0001 * ($DiskBytes.vda + $DiskBytes.vdb)

Write-Host ''
Write-Host "Change patterns: $(($Pattern | ForEach-Object { "$_ = $($changes[$_])" }) -join '; ')."
Write-Host ("Disks: {0}; {1}. Allowance: 0.01% of the disks' size = {2} MiB." -f $DiskName.vda, $DiskName.vdb, (& $mib $allowanceBytes))
Write-Host ''
Write-Host 'Second backup, whole VM: bytes and time (medians)'
$rows = foreach ($p in $Pattern) {
    $case = "second backup ($p)"
    $ours = Get-Of $case 'this module*'
    $differ = (Get-Figure $ours 'Differ vda') + (Get-Figure $ours 'Differ vdb')
    foreach ($method in $ours, (Get-Of $case 'by hand*')) {
        $wire = Get-Figure $method 'Wire'; $stored = Get-Figure $method 'Stored'
        [pscustomobject]@{
            Pattern = $p
            Method = $method[0].Method
            'Differ MiB (64K blocks)' = & $mib $differ
            'Wire MiB' = & $mib $wire
            'Wire / (differ + 0.01%)' = '{0:0.00}' -f ($wire / ($differ + $allowanceBytes))
            'Stored MiB' = & $mib $stored
            'Stored / (differ + 0.01%)' = '{0:0.00}' -f ($stored / ($differ + $allowanceBytes))
            'Reserved MiB' = & $mib (Get-Figure $method 'Reserved')
            'Whole s' = '{0:0.0}' -f (Get-Figure $method 'Seconds')
            'Server re-read s' = if ($method[0].PSObject.Properties['ServerRead']) { '{0:0.0}' -f (Get-Figure $method 'ServerRead') } else { '' }
        }
    }
}
$rows | Format-Table -AutoSize -Wrap | Out-String -Width 500 | Out-Host

Write-Host 'Second backup, per disk: time on the overlay against reading the disk file (medians)'
$rows = foreach ($p in $Pattern) {
    $case = "second backup ($p)"
    $ours = Get-Of $case 'this module*'; $hand = Get-Of $case 'by hand*'; $floor = Get-Of "floor ($p)" 'cat*'
    $bareCat = Get-Of "bare ($p)" '*, cat, *'; $bareNone = Get-Of "bare ($p)" '*, no read, *'
    foreach ($t in $Targets) {
        $cat = Get-Figure $floor "Cat $t"
        $sent = @($ours | ForEach-Object { $d = $_.Manifest.Disks | Where-Object Target -eq $t; if ($d.PSObject.Properties['BytesSent'] -and $null -ne $d.BytesSent) { [double]$d.BytesSent } })
        $storedAs = @($ours | ForEach-Object { $d = $_.Manifest.Disks | Where-Object Target -eq $t; if ($d.PSObject.Properties['StoredAs']) { $d.StoredAs } }) | Select-Object -Unique
        [pscustomobject]@{
            Pattern = $p
            Disk = $DiskName[$t]
            'Differ MiB' = & $mib (Get-Figure $ours "Differ $t")
            'Sent MiB (manifest)' = if ($sent) { & $mib (Get-Median $sent) } else { 'n/a' }
            'Stored as' = if ($storedAs) { $storedAs -join ', ' } else { 'n/a' }
            'Full because' = (@($ours | ForEach-Object { $d = $_.Manifest.Disks | Where-Object Target -eq $t; if ($d.PSObject.Properties['FullBecause']) { $d.FullBecause } }) | Select-Object -Unique) -join '; '
            'cat s' = '{0:0.0}' -f $cat
            'Overlay s (module)' = '{0:0.0}' -f (Get-Figure $ours "Overlay $t")
            'Module / cat' = '{0:0.00}' -f ((Get-Figure $ours "Overlay $t") / $cat)
            'of it: copy s' = '{0:0.0}' -f (Get-Figure $ours "Copy $t")
            'commit s' = '{0:0.0}' -f (Get-Figure $ours "Commit $t")
            'Copy / cat' = '{0:0.00}' -f ((Get-Figure $ours "Copy $t") / $cat)
            'Bare: cat + pivot s' = '{0:0.00}' -f (Get-Figure $bareCat "Overlay $t")
            'Bare / cat' = '{0:0.00}' -f ((Get-Figure $bareCat "Overlay $t") / $cat)
            'Bare: pivot only s' = '{0:0.00}' -f (Get-Figure $bareNone "Overlay $t")
            'Overlay s (by hand)' = '{0:0.0}' -f (Get-Figure $hand "Overlay $t")
            'its rsync s' = '{0:0.0}' -f (Get-Figure $hand "Rsync $t")
            'rsync literal MiB' = & $mib (Get-Figure $hand "Literal $t")
        }
    }
}
# -Property *: without it Format-Table shows the first 10 columns only (the 3-round run of 22:14 lost the last five)
$rows | Format-Table -Property * -AutoSize -Wrap | Out-String -Width 500 | Out-Host

Write-Host 'Where the one-liner''s time went (medians, seconds; from its -Verbose lines stamped as they came: before snapshot = process start to the snapshot command, pwsh and the checks and the base''s read-back included; after pivots = the last pivot to the end, the verification on the server included)'
$rows = foreach ($p in $Pattern) {
    foreach ($case in "first backup ($p)", "second backup ($p)") {
        foreach ($method in (Get-Of $case 'this module*'), (Get-Of $case "today's*")) {
            if (-not $method) { continue }
            [pscustomobject]@{
                Case = $case
                Method = $method[0].Method
                'Before snapshot' = '{0:0.0}' -f (Get-Figure $method 'Before snapshot')
                'Snapshot' = '{0:0.0}' -f (Get-Figure $method 'Snapshot')
                'Copy vda' = '{0:0.0}' -f (Get-Figure $method 'Copy vda')
                'Copy vdb' = '{0:0.0}' -f (Get-Figure $method 'Copy vdb')
                'Commit vda' = '{0:0.0}' -f (Get-Figure $method 'Commit vda')
                'Commit vdb' = '{0:0.0}' -f (Get-Figure $method 'Commit vdb')
                'After pivots' = '{0:0.0}' -f (Get-Figure $method 'After pivots')
                'Whole' = '{0:0.0}' -f (Get-Figure $method 'Seconds')
            }
        }
    }
}
$rows | Format-Table -AutoSize -Wrap | Out-String -Width 500 | Out-Host

Write-Host 'First, full backup: this module against today''s (medians)'
$rows = foreach ($p in $Pattern) {
    $case = "first backup ($p)"
    foreach ($method in (Get-Of $case 'this module*'), (Get-Of $case "today's*")) {
        [pscustomobject]@{
            Pattern = $p
            Method = $method[0].Method
            'Whole s' = '{0:0.0}' -f (Get-Figure $method 'Seconds')
            'Overlay vda s' = '{0:0.0}' -f (Get-Figure $method 'Overlay vda')
            'Overlay vdb s' = '{0:0.0}' -f (Get-Figure $method 'Overlay vdb')
            'Wire MiB' = & $mib (Get-Figure $method 'Wire')
            'Stored MiB' = & $mib (Get-Figure $method 'Stored')
        }
    }
}
$rows | Format-Table -AutoSize -Wrap | Out-String -Width 500 | Out-Host

Write-Host 'Against the issue''s targets (medians; measured / reference)'
$rows = foreach ($p in $Pattern) {
    $ours = Get-Of "second backup ($p)" 'this module*'; $hand = Get-Of "second backup ($p)" 'by hand*'; $floor = Get-Of "floor ($p)" 'cat*'
    $reference = (Get-Figure $ours 'Differ vda') + (Get-Figure $ours 'Differ vdb') + $allowanceBytes
    $full = Get-Of "first backup ($p)" 'this module*'; $today = Get-Of "first backup ($p)" "today's*"
    $line = { param($what, $value, $target) [pscustomobject]@{ Pattern = $p; What = $what; Measured = '{0:0.00}x' -f $value; Target = $target } }
    & $line 'bytes on the wire / (differing 64 KiB blocks + 0.01% of the disks)' ((Get-Figure $ours 'Wire') / $reference) 'at most 1.2x'
    & $line 'server space growth / (differing 64 KiB blocks + 0.01% of the disks)' ((Get-Figure $ours 'Stored') / $reference) 'at most 1.2x'
    $bare = Get-Of "bare ($p)" '*, cat, *'
    foreach ($t in $Targets) {
        & $line "time on the overlay / cat of the disk file, $t" ((Get-Figure $ours "Overlay $t") / (Get-Figure $floor "Cat $t")) 'at most 1.2x'
        & $line "  for reference: the procedure bare (snapshot, cat, blockcommit --pivot) / cat, $t" ((Get-Figure $bare "Overlay $t") / (Get-Figure $floor "Cat $t")) ''
    }
    & $line 'whole second backup / the same by hand with rsync' ((Get-Figure $ours 'Seconds') / (Get-Figure $hand 'Seconds')) 'below 1x'
    & $line 'first, full backup / today''s module' ((Get-Figure $full 'Seconds') / (Get-Figure $today 'Seconds')) 'at most 1x'
}
$rows | Format-Table -AutoSize -Wrap | Out-String -Width 500 | Out-Host

if ($VerbosePreference -eq 'Continue') {
    $samples | Sort-Object Case, Method, Round | Select-Object Case, Method, Round, Seconds, Wire, Stored | Format-Table -AutoSize | Out-String -Width 500 | Out-Host
}
Write-Host ("Rounds: {0}, methods alternating within each; every backup in a fresh process (pwsh or bash). Cache: {1}. 'Differ': 64 KiB blocks that differ between the module's first and second copy, read on the server (rsync's row shows the same figure). 'Whole s': the command from start to return, the set verified and Complete on the server (this module) or the last step done (by hand). 'Overlay': snapshot to pivot per disk. 'Server re-read': the server reading the previous rsync copy (cat, caches dropped), which rsync does besides reading the source; on the lab the server shares the host's disk. Load average at end: {2}." -f $Rounds, $script:CacheNote, (((Get-Content /proc/loadavg) -split ' ')[0..2] -join ' '))
