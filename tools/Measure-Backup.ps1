#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Times the module's one-liner against the same six steps by hand (virsh + cp), and its sparse copy against cp.
.DESCRIPTION
    Prints figures; asserts nothing about time. In one run, round by round (A, B, A, B ...) on linux_vm:

      A  Get-VmDisk | New-KvmDiskSnapshot | Copy-VmDisk | Invoke-BlockCommit | Move-OverlayToRetention
         into a scratch destination and retention folder.
      B  the same steps by hand: virsh domblklist; virsh snapshot-create-as --disk-only --atomic --quiesce;
         cp --sparse=always of each disk file; virsh snapshot-delete --metadata; virsh blockcommit --active
         --verbose --pivot per disk; mv of the overlays to a retention folder.

    and, on a 1 GiB fully written raw file (zeros, with 200 MiB of random data; not a VM disk), per round:

      C  [OdaKvmBackup.Core.Backup.SparseFile]::CopyAsync (sparse copy + content digest + fsync) against
         cp --sparse=always, and cp followed by sync FILE.

    The page cache is dropped before every timed run when /proc/sys/vm/drop_caches can be written (the
    output says whether it was). After each A and B run the VM is checked (own disks, no snapshot) with virsh;
    a by-hand run that fails is cleaned up with Repair-KvmBackup. Scratch files are removed at the end.
    Called by ./build.ps1 -Task Bench [-BenchRounds N] after Build and Lab.
.EXAMPLE
    ./tools/Measure-Backup.ps1 -ModulePath ./out/OdaKvmBackup/OdaKvmBackup.psd1 -Rounds 3
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ModulePath,
    [ValidateRange(1, 100)][int] $Rounds = 3,
    [string] $VmName = 'linux_vm',
    # The scratch folder is created under it (same file system as the lab disks by default).
    [string] $ScratchRoot = '/var/tmp'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$ModulePath = (Resolve-Path -LiteralPath $ModulePath).Path
Import-Module $ModulePath -Force
# Import-Module alone does not load OdaKvmBackup.Core.dll (the CLR loads it when a cmdlet first runs): load it
# now, so [OdaKvmBackup.Core.Backup.SparseFile] resolves even before any cmdlet has run.
$null = [System.Reflection.Assembly]::LoadFrom((Join-Path (Split-Path $ModulePath) 'OdaKvmBackup.Core.dll'))
$SnapshotName = 'FILE_STAGE_BACKUP.TEMP'
$scratch = Join-Path $ScratchRoot ("odakvm-bench-{0}" -f [guid]::NewGuid().ToString('N').Substring(0, 8))
$samples = [System.Collections.Generic.List[object]]::new()
$steps = [System.Collections.Generic.List[object]]::new()

function Invoke-Tool([string] $Program, [string[]] $Arguments) {
    $out = & $Program @Arguments 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { throw "$Program $($Arguments -join ' ') failed with exit code ${LASTEXITCODE}: $($out.Trim())" }
    $out
}

function Get-AllocatedBytes([string] $Path) {
    $blocks, $unit = (& stat -c '%b %B' -- $Path) -split ' '
    [long]$blocks * [long]$unit
}

function Get-LoadAverage { ((Get-Content /proc/loadavg) -split ' ')[0..2] -join ' ' }

# sync, then drop the page cache, so each timed run reads from the disk, not from memory.
$script:DropCaches = $false
$script:DropNote = ''
try {
    & sync
    [System.IO.File]::WriteAllText('/proc/sys/vm/drop_caches', "3`n")
    $script:DropCaches = $true
    $script:DropNote = 'page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed run'
}
catch { $script:DropNote = "page cache NOT dropped: echo 3 > /proc/sys/vm/drop_caches failed ($($_.Exception.GetBaseException().Message))" }

function Clear-PageCache {
    if (-not $script:DropCaches) { return }
    & sync
    [System.IO.File]::WriteAllText('/proc/sys/vm/drop_caches', "3`n")
}

function Add-Sample([int] $Round, [string] $Method, [double] $Seconds, [string] $Note = '') {
    $samples.Add([pscustomobject]@{ Seq = $samples.Count; Part = $Method.Substring(0, 1) -eq 'C'; Round = $Round; Method = $Method; Seconds = $Seconds; Note = $Note })
}

# True when every disk of the domain writes to its own file (no backing image), live and saved, and no snapshot is left.
function Test-Clean([string] $Domain) {
    foreach ($view in @(@(), @('--inactive'))) {
        $xml = [xml](Invoke-Tool virsh (@('-c', 'qemu:///system', 'dumpxml', $Domain) + $view))
        foreach ($disk in $xml.domain.devices.disk) {
            if ($disk.device -eq 'disk' -and $disk.SelectSingleNode('backingStore/source')) { return $false }
            if ($disk.device -eq 'disk' -and "$($disk.source.file)".EndsWith(".$SnapshotName")) { return $false }
        }
    }
    -not (Invoke-Tool virsh @('-c', 'qemu:///system', 'snapshot-list', $Domain, '--name')).Trim()
}

# libvirt's default external snapshot file: the extension of the disk file replaced by the snapshot name,
# or the name appended when the file has no extension (ODA's linux_boot, disco_secundario ...).
function Get-DefaultOverlayPath([string] $Source) {
    $leaf = Split-Path -Leaf $Source
    $dot = $leaf.LastIndexOf('.')
    if ($dot -gt 0) { return Join-Path (Split-Path $Source) ($leaf.Substring(0, $dot + 1) + $SnapshotName) }
    "$Source.$SnapshotName"
}

function Invoke-ModuleRun([int] $Round) {
    $dest = Join-Path $scratch 'A/backup'
    $retention = Join-Path $scratch 'A/retention'
    New-Item -ItemType Directory -Force -Path $dest, $retention | Out-Null
    Clear-PageCache
    $watch = [System.Diagnostics.Stopwatch]::StartNew()
    $objects = @(Get-VmDisk $VmName | New-KvmDiskSnapshot | Copy-VmDisk -Destination $dest | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention)
    $watch.Stop()
    $bad = @($objects | Where-Object { "$($_.Stage)" -ne 'Retained' })
    if ($objects.Count -eq 0 -or $bad.Count) { throw "A, round ${Round}: the one-liner did not retain every disk." }
    if (-not (Test-Clean $VmName)) { throw "A, round ${Round}: $VmName is not back on its own disks." }
    $data = ($objects | Measure-Object CopiedBytes -Sum).Sum
    Add-Sample $Round 'A module one-liner' $watch.Elapsed.TotalSeconds ('{0} disks, {1:0.0} MiB data, digest-verified, {2}' -f $objects.Count, ($data / 1MB), $objects[0].Consistency)
}

function Invoke-ByHandRun([int] $Round) {
    $dest = Join-Path $scratch "B/backup/$Round"
    $retention = Join-Path $scratch "B/retention/$Round"
    New-Item -ItemType Directory -Force -Path $dest, $retention | Out-Null
    $step = @{}
    Clear-PageCache
    $watch = [System.Diagnostics.Stopwatch]::StartNew()
    $lap = [System.Diagnostics.Stopwatch]::StartNew()
    try {
        # 1. the disks
        $disks = @((Invoke-Tool virsh @('domblklist', $VmName)) -split "`n" | ForEach-Object {
                $f = $_.Trim() -split '\s+'
                if ($f.Count -eq 2 -and $f[0] -notin 'Target' -and $f[0] -notmatch '^-+$' -and $f[1] -ne '-') { [pscustomobject]@{ Target = $f[0]; Source = $f[1] } }
            })
        $step['1 domblklist'] = $lap.Elapsed.TotalSeconds; $lap.Restart()
        # 2. one atomic, quiesced, disk-only external snapshot
        Invoke-Tool virsh @('snapshot-create-as', '--domain', $VmName, '--name', $SnapshotName, '--disk-only', '--atomic', '--quiesce') | Out-Null
        $step['2 snapshot-create-as'] = $lap.Elapsed.TotalSeconds; $lap.Restart()
        # 3. copy the frozen files
        foreach ($d in $disks) { Invoke-Tool cp @('--sparse=always', $d.Source, $dest) | Out-Null }
        $step['3 cp --sparse=always'] = $lap.Elapsed.TotalSeconds; $lap.Restart()
        # 4. drop the snapshot metadata (the overlays stay)
        Invoke-Tool virsh @('snapshot-delete', '--domain', $VmName, $SnapshotName, '--metadata') | Out-Null
        $step['4 snapshot-delete'] = $lap.Elapsed.TotalSeconds; $lap.Restart()
        # 5. merge each overlay back and pivot
        foreach ($d in $disks) { Invoke-Tool virsh @('blockcommit', $VmName, $d.Target, '--active', '--verbose', '--pivot') | Out-Null }
        $step['5 blockcommit --pivot'] = $lap.Elapsed.TotalSeconds; $lap.Restart()
        # 6. keep the overlays
        foreach ($d in $disks) { Invoke-Tool mv @((Get-DefaultOverlayPath $d.Source), $retention) | Out-Null }
        $step['6 mv overlays'] = $lap.Elapsed.TotalSeconds
        $watch.Stop()
    }
    catch {
        Write-Warning "B, round ${Round} failed: $($_.Exception.Message). Putting $VmName back on its own disks with Repair-KvmBackup."
        Repair-KvmBackup -DomainName $VmName -RetentionPath $retention | Out-Host
        throw
    }
    if (-not (Test-Clean $VmName)) { throw "B, round ${Round}: $VmName is not back on its own disks." }
    $data = ($disks | ForEach-Object { Get-AllocatedBytes (Join-Path $dest (Split-Path -Leaf $_.Source)) } | Measure-Object -Sum).Sum
    Add-Sample $Round 'B virsh + cp by hand' $watch.Elapsed.TotalSeconds ('{0} disks, {1:0.0} MiB allocated in copies, not verified' -f $disks.Count, ($data / 1MB))
    foreach ($k in $step.Keys) { $steps.Add([pscustomobject]@{ Step = $k; Seconds = $step[$k] }) }
}

function Invoke-CopyRun([int] $Round, [string] $Source) {
    $size = (Get-Item -LiteralPath $Source).Length
    $mib = $size / 1MB
    # ours: sparse copy + content digest + fsync, the core of Copy-VmDisk (Copy-VmDisk also reads the copy back)
    $ours = Join-Path $scratch "C/ours-$Round.raw"
    Clear-PageCache
    $watch = [System.Diagnostics.Stopwatch]::StartNew()
    $result = [OdaKvmBackup.Core.Backup.SparseFile]::CopyAsync($Source, $ours, 0, $null, [Threading.CancellationToken]::None).GetAwaiter().GetResult()
    $watch.Stop()
    $oursSeconds = $watch.Elapsed.TotalSeconds
    $oursAlloc = Get-AllocatedBytes $ours
    # cp --sparse=always, then sync of the copy (ours ends with an fsync)
    $cp = Join-Path $scratch "C/cp-$Round.raw"
    Clear-PageCache
    $watch.Restart()
    Invoke-Tool cp @('--sparse=always', $Source, $cp) | Out-Null
    $watch.Stop()
    $cpSeconds = $watch.Elapsed.TotalSeconds
    $watch.Restart()
    Invoke-Tool sync @($cp) | Out-Null
    $watch.Stop()
    $syncSeconds = $watch.Elapsed.TotalSeconds
    $cpAlloc = Get-AllocatedBytes $cp
    if ($Round -eq 1) {
        # both copies hold the source's bytes: cmp against the source, and the content digest of cp's copy
        Invoke-Tool cmp @($Source, $ours) | Out-Null
        Invoke-Tool cmp @($Source, $cp) | Out-Null
        $cpDigest = [OdaKvmBackup.Core.Backup.SparseFile]::DigestAsync($cp, $null, [Threading.CancellationToken]::None).GetAwaiter().GetResult()
        if ($cpDigest.ContentDigest -ne $result.ContentDigest) { throw 'C: the two copies differ.' }
    }
    Add-Sample $Round 'C ours SparseFile.CopyAsync' $oursSeconds ('{0,6:0} MiB/s, copy allocates {1:0.0} MiB, digest + fsync included' -f ($mib / $oursSeconds), ($oursAlloc / 1MB))
    Add-Sample $Round 'C cp --sparse=always' $cpSeconds ('{0,6:0} MiB/s, copy allocates {1:0.0} MiB, no fsync' -f ($mib / $cpSeconds), ($cpAlloc / 1MB))
    Add-Sample $Round 'C cp --sparse=always; sync FILE' ($cpSeconds + $syncSeconds) ('{0,6:0} MiB/s, same copy, + fsync' -f ($mib / ($cpSeconds + $syncSeconds)))
    Remove-Item -LiteralPath $ours, $cp -Force
}

function Get-Median([double[]] $Values) {
    $sorted = @($Values | Sort-Object)
    $n = $sorted.Count
    if ($n % 2) { return $sorted[($n - 1) / 2] }
    ($sorted[$n / 2 - 1] + $sorted[$n / 2]) / 2
}

# ---------------------------------------------------------------- the machine and the starting point
$loadStart = Get-LoadAverage
$state = (Invoke-Tool virsh @('-c', 'qemu:///system', 'domstate', $VmName)).Trim()
if ($state -ne 'running') { throw "$VmName is '$state', not running: run ./build.ps1 -Task Lab first." }
if (-not (Test-Clean $VmName)) { throw "$VmName is on an overlay or has snapshot metadata: run Repair-KvmBackup -DomainName $VmName first." }
$cpu = ((Get-Content /proc/cpuinfo | Where-Object { $_ -like 'model name*' } | Select-Object -First 1) -split ':', 2)[1].Trim()
$memGiB = [long](((Get-Content /proc/meminfo -TotalCount 1) -split '\s+')[1]) / 1MB
$fs = (& df -PT $ScratchRoot | Select-Object -Last 1) -split '\s+'
Write-Host "OdaKvmBackup benchmark, $Rounds round(s), $VmName, $(Get-Date -Format 'yyyy-MM-dd HH:mm:ss')"
Write-Host ("Machine: nproc {0}, {1}, {2:0.0} GiB RAM, scratch {3} on {4} ({5}); load average at start {6}" -f (& nproc), $cpu, $memGiB, $ScratchRoot, $fs[1], $fs[0], $loadStart)
Write-Host ("Versions: {0}; {1}; {2}; pwsh {3}" -f (& virsh --version | Select-Object -First 1).Insert(0, 'libvirt '), (& qemu-img --version | Select-Object -First 1), (& cp --version | Select-Object -First 1), $PSVersionTable.PSVersion)
Write-Host "Cache: $script:DropNote"

try {
    New-Item -ItemType Directory -Force -Path (Join-Path $scratch 'C') | Out-Null
    # ---------------------------------------------------------------- A and B, interleaved
    Write-Host "`nA/B: the whole backup of $VmName ($((Get-VmDisk $VmName | ForEach-Object { "$($_.Target) $($_.Format)" }) -join ', '))"
    for ($r = 1; $r -le $Rounds; $r++) {
        Invoke-ModuleRun $r
        Invoke-ByHandRun $r
        Write-Host ("  round {0}: A {1:0.00} s, B {2:0.00} s" -f $r, $samples[-2].Seconds, $samples[-1].Seconds)
    }

    # ---------------------------------------------------------------- C
    $source = Join-Path $scratch 'C/source.raw'
    Write-Host "`nC: making $source (1 GiB of written zeros, fully allocated; 4 x 50 MiB of random data at 0, 256, 512, 768 MiB)"
    Invoke-Tool dd @('if=/dev/zero', "of=$source", 'bs=1M', 'count=1024', 'conv=fsync', 'status=none') | Out-Null
    foreach ($at in 0, 256, 512, 768) {
        Invoke-Tool dd @('if=/dev/urandom', "of=$source", 'bs=1M', 'count=50', "seek=$at", 'conv=notrunc,fsync', 'status=none') | Out-Null
    }
    Write-Host ('  source: {0:0} MiB apparent, {1:0} MiB allocated' -f ((Get-Item $source).Length / 1MB), ((Get-AllocatedBytes $source) / 1MB))
    for ($r = 1; $r -le $Rounds; $r++) {
        Invoke-CopyRun $r $source
        Write-Host ("  round {0}: ours {1:0.00} s, cp {2:0.00} s" -f $r, $samples[-3].Seconds, $samples[-2].Seconds)
    }
}
finally {
    if (-not (Test-Clean $VmName)) {
        Write-Warning "$VmName was left on an overlay: Repair-KvmBackup -DomainName $VmName"
        Repair-KvmBackup -DomainName $VmName | Out-Host
    }
    if (Test-Path -LiteralPath $scratch) { Remove-Item -LiteralPath $scratch -Recurse -Force }
}
$loadEnd = Get-LoadAverage

# ---------------------------------------------------------------- figures
Write-Host "`nPer round (seconds):"
$samples | Sort-Object Part, Round, Seq |
    Format-Table Round, Method, @{ n = 'Seconds'; e = { '{0:0.00}' -f $_.Seconds }; a = 'Right' }, Note -AutoSize |
    Out-String -Width 250 | Out-Host
Write-Host 'Per method:'
$samples | Group-Object Method | ForEach-Object {
    $t = [double[]]@($_.Group.Seconds)
    [pscustomobject]@{
        Method   = $_.Name
        Runs     = $t.Count
        'Median s' = [math]::Round((Get-Median $t), 2)
        'Min s'    = [math]::Round(($t | Measure-Object -Minimum).Minimum, 2)
        'MiB/s at median' = if ($_.Name -like 'C *') { [int](1024 / (Get-Median $t)) } else { $null }
    }
} | Format-Table -AutoSize | Out-String -Width 250 | Out-Host
Write-Host 'B by step (median s over rounds):'
$steps | Group-Object Step | Sort-Object Name | ForEach-Object { '  {0,-22} {1:0.00}' -f $_.Name, (Get-Median ([double[]]@($_.Group.Seconds))) } | Out-Host
Write-Host "`nLoad average: start $loadStart, end $loadEnd (nproc $(& nproc)). $script:DropNote."
