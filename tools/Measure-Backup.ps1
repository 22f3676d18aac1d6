#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Measures OdaKvmBackup against what an admin would use instead, side by side, and prints one table.
.DESCRIPTION
    Prints figures; asserts nothing about time. Every method runs in rounds that alternate (A, B, C, A, B, C ...), each
    from a fresh process (start-up and JIT count), the page cache dropped before each run (the output says whether
    it could be). Medians are reported.

      Copy, local   on (a) a qcow2 of 4 GiB virtual size holding 1 GiB of random data and (b) a fully allocated
                    2 GiB raw file, a quarter random data and the rest zeros:
                    Copy-VmDisk's engine (sparse copy + content digest + fsync; the read-back check is timed apart)
                    against cp --sparse=always + sync FILE, and qemu-img convert + sync FILE.
      Copy, SSH     the same files to the lab's sshd on loopback (alias odakvm-backup): Copy-VmDisk's SSH store
                    (segment digests + fsync; the check on the server timed apart) against scp and
                    tar -cS | ssh tar -xS, with the bytes each one sent (lo counter).
      Backup        the one-liner (pwsh started for it) against the same six steps by hand (virsh, cp
                    --sparse=always, sync, mv) on lab_bench, whose disks are like (a) and (b); with the time each
                    disk spent on its overlay (snapshot to pivot), beside its own copy and its own commit.
      Import        Import-Module OdaKvmBackup in a fresh pwsh.
    Called by ./build.ps1 -Task Bench [-BenchRounds N] after Build and Lab.
.EXAMPLE
    ./tools/Measure-Backup.ps1 -ModulePath ./out/OdaKvmBackup/OdaKvmBackup.psd1 -Rounds 3
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ModulePath,
    [ValidateRange(1, 100)][int] $Rounds = 3,
    [string] $ScratchRoot = '/var/tmp',
    [string[]] $Part = @('CopyLocal', 'CopySsh', 'Backup', 'Import')
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ModulePath = (Resolve-Path -LiteralPath $ModulePath).Path
$Core = Join-Path (Split-Path $ModulePath) 'OdaKvmBackup.Core.dll'
$Repo = Split-Path $PSScriptRoot
Import-Module (Join-Path $Repo 'tests/Lab/OdaKvmLab.psm1') -Force
Import-Module (Join-Path $Repo 'tests/Lab/OdaKvmSshLab.psm1') -Force
$Pwsh = @([Environment]::ProcessPath, [Environment]::GetCommandLineArgs()[0])   # this pwsh: dotnet + pwsh.dll
$Vm = 'lab_bench'
$Snapshot = 'FILE_STAGE_BACKUP.TEMP'
$scratch = Join-Path $ScratchRoot ("odakvm-bench-{0}" -f [guid]::NewGuid().ToString('N').Substring(0, 8))
$samples = [System.Collections.Generic.List[object]]::new()

function Invoke-Tool([string] $Program, [string[]] $Arguments) {
    $out = & $Program @Arguments 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { throw "$Program $($Arguments -join ' ') failed with exit code ${LASTEXITCODE}: $($out.Trim())" }
    $out
}

function Get-AllocatedBytes([string] $Path) { $b, $u = (& stat -c '%b %B' -- $Path) -split ' '; [long]$b * [long]$u }

# Before each run everything is synced and the data files' pages are dropped (dd iflag=nocache count=0 is
# posix_fadvise DONTNEED on the whole file), so every copy reads its source from the disk. The programs' own files
# stay cached for all the methods alike, as on a host where pwsh, cp and ssh run every day.
$CacheNote = "sync, then the source files' pages dropped from the page cache (dd iflag=nocache count=0) before every timed run; programs' files left cached"
function Clear-PageCache([string[]] $Files = @()) {
    & sync
    foreach ($f in $Files) { & dd "if=$f" iflag=nocache count=0 status=none }
}

function Add-Sample([string] $Case, [string] $Method, [int] $Round, [double] $Seconds, [hashtable] $Extra = @{}) {
    $samples.Add([pscustomobject](@{ Case = $Case; Method = $Method; Round = $Round; Seconds = $Seconds } + $Extra))
}

# Times a command line as a whole (process start included).
function Measure-Process([string[]] $CommandLine, [hashtable] $Environment = @{}) {
    $psi = [Diagnostics.ProcessStartInfo]::new($CommandLine[0])
    foreach ($a in $CommandLine[1..($CommandLine.Count - 1)]) { $psi.ArgumentList.Add($a) }
    $psi.RedirectStandardOutput = $true; $psi.RedirectStandardError = $true; $psi.UseShellExecute = $false
    foreach ($k in $Environment.Keys) { $psi.Environment[$k] = $Environment[$k] }
    $watch = [Diagnostics.Stopwatch]::StartNew()
    $p = [Diagnostics.Process]::Start($psi)
    $out = $p.StandardOutput.ReadToEndAsync(); $err = $p.StandardError.ReadToEndAsync()
    $p.WaitForExit()
    $watch.Stop()
    if ($p.ExitCode -ne 0) { throw "'$($CommandLine -join ' ')' failed ($($p.ExitCode)): $($err.Result)$($out.Result)" }
    [pscustomobject]@{ Seconds = $watch.Elapsed.TotalSeconds; Output = $out.Result }
}

# The copy engine, once, in a fresh pwsh: prints what it measured inside (the first copy of the process).
$EngineScript = Join-Path $scratch 'engine.ps1'
$EngineCode = @'
param($Core, $Source, $Location, $Name)
$coreAssembly = [Reflection.Assembly]::LoadFrom($Core)
# The core's engine types are internal: no [type] literal reaches them, their public static members do.
$sparseCopy = $coreAssembly.GetType('OdaKvmBackup.Core.Copies.SparseCopy', $true)
$none = [Threading.CancellationToken]::None
$runner = [Activator]::CreateInstance($coreAssembly.GetType('OdaKvmBackup.Core.Host.CliWrapProcessRunner', $true), @($coreAssembly.GetType('OdaKvmBackup.Core.Host.NullSink', $true)::Instance))
$store = $coreAssembly.GetType('OdaKvmBackup.Core.Stores.BackupStores', $true)::Open($Location, $runner, 'Destination')
$watch = [Diagnostics.Stopwatch]::StartNew()
$writer = $store.CreateFileAsync($Name, $none).GetAwaiter().GetResult()
$copy = $sparseCopy::CopyAsync($Source, $writer, 0, $null, $none, $store.IsRemote).GetAwaiter().GetResult()
$null = $writer.DisposeAsync().AsTask().GetAwaiter().GetResult()
$copied = $watch.Elapsed.TotalSeconds
$watch.Restart()
if ($store.IsRemote) {
    $indexes = [long[]]@($copy.SegmentDigests.Keys)
    $null = $store.SegmentDigestsAsync($Name, $sparseCopy::SegmentSize, $indexes, $none).GetAwaiter().GetResult()
} else {
    $null = $sparseCopy::DigestAsync((Join-Path $Location $Name), $null, $none).GetAwaiter().GetResult()
}
[pscustomobject]@{ Copy = $copied; Check = $watch.Elapsed.TotalSeconds; Data = $copy.DataBytes } | ConvertTo-Json -Compress
'@

function New-SourceFiles {
    $files = Join-Path $scratch 'sources'
    New-Item -ItemType Directory -Force $files | Out-Null
    $qcow2 = Join-Path $files 'a.qcow2'; $raw = Join-Path $files 'b.raw'; $tmp = Join-Path $files 'a.tmp'
    Invoke-Tool truncate @('-s', '4G', $tmp) | Out-Null
    foreach ($i in 0..15) { Invoke-Tool dd @('if=/dev/urandom', "of=$tmp", 'bs=1M', 'count=64', "seek=$($i * 256)", 'conv=notrunc', 'status=none') | Out-Null }
    Invoke-Tool qemu-img @('convert', '-q', '-O', 'qcow2', $tmp, $qcow2) | Out-Null
    Remove-Item $tmp
    Invoke-Tool fallocate @('-l', '2G', $raw) | Out-Null
    foreach ($i in 0..31) { Invoke-Tool dd @('if=/dev/urandom', "of=$raw", 'bs=1M', 'count=16', "seek=$($i * 64)", 'conv=notrunc', 'status=none') | Out-Null }
    [ordered]@{ '(a) qcow2 4 GiB, 1 GiB data' = $qcow2; '(b) raw 2 GiB allocated, 512 MiB data' = $raw }
}

# Runs the methods of one round, each round starting with the next one (A B C, B C A, C A B ...): no method always
# runs first, after the previous round's files were deleted, or last, with the others' write-back still going.
function Invoke-Rotated([int] $Round, [scriptblock[]] $Methods) {
    for ($i = 0; $i -lt $Methods.Count; $i++) { . $Methods[($Round - 1 + $i) % $Methods.Count] }
}

function Invoke-LocalCopyRound([string] $Case, [string] $Source, [int] $Round) {
    $out = Join-Path $scratch 'local'
    New-Item -ItemType Directory -Force $out | Out-Null
    $format = if ($Source -like '*.qcow2') { 'qcow2' } else { 'raw' }
    Invoke-Rotated $Round @(
        {
            Clear-PageCache $Source
            $r = Measure-Process ($Pwsh + @('-NoProfile', '-File', $EngineScript, $Core, $Source, $out, 'ours'))
            $m = $r.Output | ConvertFrom-Json
            Add-Sample $Case 'Copy-VmDisk engine (sparse + digest + fsync)' $Round $m.Copy @{ Check = $m.Check; Process = $r.Seconds; Allocated = Get-AllocatedBytes (Join-Path $out 'ours') }
            Remove-Item (Join-Path $out 'ours')
        },
        {
            Clear-PageCache $Source
            $r = Measure-Process @('sh', '-c', 'cp --sparse=always "$1" "$2" && sync "$2"', 'sh', $Source, (Join-Path $out 'cp'))
            Add-Sample $Case 'cp --sparse=always; sync FILE' $Round $r.Seconds @{ Allocated = Get-AllocatedBytes (Join-Path $out 'cp') }
            Remove-Item (Join-Path $out 'cp')
        },
        {
            Clear-PageCache $Source
            $r = Measure-Process @('sh', '-c', 'qemu-img convert -f "$3" -O "$3" "$1" "$2" && sync "$2"', 'sh', $Source, (Join-Path $out 'qi'), $format)
            Add-Sample $Case 'qemu-img convert; sync FILE' $Round $r.Seconds @{ Allocated = Get-AllocatedBytes (Join-Path $out 'qi') }
            Remove-Item (Join-Path $out 'qi')
        })
}

function Invoke-SshCopyRound([string] $Case, [string] $Source, [int] $Round) {
    $remote = Join-Path $scratch 'remote'   # the server is this machine: a local path is also the remote one
    New-Item -ItemType Directory -Force $remote | Out-Null
    $ssh = @('-o', 'BatchMode=yes')
    $leaf = Split-Path -Leaf $Source
    Invoke-Rotated $Round @(
        {
            Clear-PageCache $Source
            $lo = Get-LabLoopbackReceivedBytes
            $r = Measure-Process ($Pwsh + @('-NoProfile', '-File', $EngineScript, $Core, $Source, "odakvm-backup:$remote", 'ours'))
            $m = $r.Output | ConvertFrom-Json
            Add-Sample $Case 'Copy-VmDisk SSH store (sparse + segment digests + fsync)' $Round $m.Copy @{ Check = $m.Check; Process = $r.Seconds; Wire = (Get-LabLoopbackReceivedBytes) - $lo; Allocated = Get-AllocatedBytes (Join-Path $remote 'ours') }
            Remove-Item (Join-Path $remote 'ours')
        },
        {
            Clear-PageCache $Source
            $lo = Get-LabLoopbackReceivedBytes
            $r = Measure-Process (@('scp', '-q') + $ssh + @($Source, "odakvm-backup:$remote/scp"))
            Add-Sample $Case 'scp' $Round $r.Seconds @{ Wire = (Get-LabLoopbackReceivedBytes) - $lo; Allocated = Get-AllocatedBytes (Join-Path $remote 'scp') }
            Remove-Item (Join-Path $remote 'scp')
        },
        {
            Clear-PageCache $Source
            $lo = Get-LabLoopbackReceivedBytes
            New-Item -ItemType Directory -Force (Join-Path $remote 'tar') | Out-Null
            $r = Measure-Process @('sh', '-c', 'tar -C "$1" -cSf - "$2" | ssh -o BatchMode=yes odakvm-backup "tar -C $3 -xSf -"', 'sh', (Split-Path $Source), $leaf, (Join-Path $remote 'tar'))
            Add-Sample $Case 'tar -cS | ssh tar -xS' $Round $r.Seconds @{ Wire = (Get-LabLoopbackReceivedBytes) - $lo; Allocated = Get-AllocatedBytes (Join-Path $remote "tar/$leaf") }
            Remove-Item -Recurse (Join-Path $remote 'tar')
        })
}

function Test-Clean {
    foreach ($view in @(@(), @('--inactive'))) {
        $xml = [xml](Invoke-Tool virsh (@('-c', 'qemu:///system', 'dumpxml', $Vm) + $view))
        foreach ($disk in $xml.domain.devices.disk) { if ($disk.device -eq 'disk' -and $disk.SelectSingleNode('backingStore/source')) { return $false } }
    }
    -not (Invoke-Tool virsh @('-c', 'qemu:///system', 'snapshot-list', $Vm, '--name')).Trim()
}

function Invoke-BackupRound([int] $Round) {
    $case = 'whole backup of lab_bench'
    Invoke-Rotated $Round @(
        {
        $dest = Join-Path $scratch "backup/A$Round"; $ret = Join-Path $scratch "retention/A$Round"
        New-Item -ItemType Directory -Force $dest, $ret | Out-Null
        $script = "Import-Module '$ModulePath'; Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination '$dest' | Invoke-BlockCommit | Move-OverlayToRetention -Path '$ret' | ForEach-Object { [pscustomobject]@{ Target = `$_.Target; OnOverlay = `$_.TimeOnOverlay.TotalSeconds; Copy = `$_.CopyTime.TotalSeconds; Commit = `$_.CommitTime.TotalSeconds; Status = `$_.SetStatus } } | ConvertTo-Json -Compress"
        Clear-PageCache $VmDisks
        $r = Measure-Process ($Pwsh + @('-NoProfile', '-Command', $script))
        $objects = @($r.Output | ConvertFrom-Json)
        if ($objects.Count -ne 2 -or @($objects | Where-Object Status -ne 'Complete').Count) { throw "the one-liner did not complete: $($r.Output)" }
        if (-not (Test-Clean)) { throw "$Vm is not back on its own disks after the one-liner" }
        Add-Sample $case 'the one-liner (pwsh started for it; copies verified)' $Round $r.Seconds @{ Exposure = ($objects | ForEach-Object { '{0} {1:0.00} s (its copy {2:0.00} s + its commit {3:0.00} s + {4:0.00} s)' -f $_.Target, $_.OnOverlay, $_.Copy, $_.Commit, ($_.OnOverlay - $_.Copy - $_.Commit) }) -join ', ' }
        },
        {
        $dest = Join-Path $scratch "backup/B$Round"; $ret = Join-Path $scratch "retention/B$Round"
        New-Item -ItemType Directory -Force $dest, $ret | Out-Null
        # The procedure the module replaces, as a script would run it. Times: snapshot, then each pivot.
        $byHand = @'
set -e
vm=$1; dest=$2; ret=$3; snap=FILE_STAGE_BACKUP.TEMP
disks=$(virsh -q domblklist "$vm" | awk '$2 != "-" {print $1 "=" $2}')
virsh snapshot-create-as --domain "$vm" --name $snap --disk-only --atomic --quiesce >/dev/null
t0=$(date +%s.%N)
for d in $disks; do cp --sparse=always "${d#*=}" "$dest/"; done
sync -f "$dest"
virsh snapshot-delete --domain "$vm" $snap --metadata >/dev/null
for d in $disks; do virsh blockcommit "$vm" "${d%%=*}" --active --verbose --pivot >/dev/null 2>&1; echo "${d%%=*} $(awk "BEGIN { print $(date +%s.%N) - $t0 }")"; done
for d in $disks; do src=${d#*=}; base=$(basename "$src"); mv "$(dirname "$src")/${base%.*}.$snap" "$ret/"; done
'@
        Clear-PageCache $VmDisks
        $r = Measure-Process @('bash', '-c', $byHand, 'byhand', $Vm, $dest, $ret)
        if (-not (Test-Clean)) { throw "$Vm is not back on its own disks after the steps by hand" }
        $exposure = ($r.Output.Trim() -split "`n" | ForEach-Object { $t, $s = $_ -split ' '; '{0} {1:0.00} s' -f $t, [double]$s }) -join ', '
        Add-Sample $case 'the 6 steps by hand (virsh, cp --sparse=always, sync, mv; nothing checked)' $Round $r.Seconds @{ Exposure = $exposure }
        })
    Remove-Item -Recurse -Force (Join-Path $scratch 'backup'), (Join-Path $scratch 'retention')
}

function Get-Median([double[]] $Values) {
    $s = @($Values | Sort-Object); $n = $s.Count
    if ($n % 2) { $s[($n - 1) / 2] } else { ($s[$n / 2 - 1] + $s[$n / 2]) / 2 }
}

# ---------------------------------------------------------------- run
New-Item -ItemType Directory -Force $scratch | Out-Null
Set-Content -Path $EngineScript -Value $EngineCode
$load = ((Get-Content /proc/loadavg) -split ' ')[0..2] -join ' '
$cpu = ((Get-Content /proc/cpuinfo | Where-Object { $_ -like 'model name*' } | Select-Object -First 1) -split ':', 2)[1].Trim()
$fs = (& df -PT $ScratchRoot | Select-Object -Last 1) -split '\s+'
Write-Host "OdaKvmBackup benchmark, $Rounds round(s), $(Get-Date -Format 'yyyy-MM-dd HH:mm:ss')"
Write-Host ("Machine: nproc {0}, {1}, {2:0.0} GiB RAM, scratch on {3} ({4}); load average at start {5}" -f (& nproc), $cpu, ([long](((Get-Content /proc/meminfo -TotalCount 1) -split '\s+')[1]) / 1MB), $fs[1], $fs[0], $load)
Write-Host ("Versions: {0}; {1}; {2}; {3}; pwsh {4}" -f ((& virsh --version) -join ''), (& qemu-img --version | Select-Object -First 1), (& cp --version | Select-Object -First 1), ((& ssh -V 2>&1) -join ''), $PSVersionTable.PSVersion)
Write-Host "Cache: $CacheNote"
# The other lab VMs' guests write to their disks all the time: they are shut off for the bench, so that only the
# methods measured compete for the disk and the two cores (the Pester tests start them again when they need them).
$others = @((Invoke-Tool virsh @('-c', 'qemu:///system', 'list', '--name')) -split "`n" | ForEach-Object Trim | Where-Object { $_ -and $_ -ne $Vm })
foreach ($other in $others) { Invoke-LabVirsh @('destroy', $other) -AllowFailure | Out-Null }
Write-Host "Other VMs shut off for the bench: $(if ($others) { $others -join ', ' } else { 'none were running' })"
try {
    $sources = if ($Part -contains 'CopyLocal' -or $Part -contains 'CopySsh') { New-SourceFiles } else { @{} }
    if ($Part -contains 'CopySsh') { $null = Start-LabSshd; Write-Host "SSH cipher: $((& ssh -G odakvm-backup | Where-Object { $_ -like 'ciphers *' }) -replace 'ciphers ', '' -split ',' | Select-Object -First 1) (the client's first choice)" }
    if ($Part -contains 'Backup') {
        Reset-LabVm -Name $Vm -Layout Bench
        $script:VmDisks = @((Get-LabDiskPath -Name $Vm -Disk boot), (Get-LabDiskPath -Name $Vm -Disk data))
    }
    for ($r = 1; $r -le $Rounds; $r++) {
        foreach ($case in $sources.Keys) {
            if ($Part -contains 'CopyLocal') { Invoke-LocalCopyRound "local copy, $case" $sources[$case] $r }
            if ($Part -contains 'CopySsh') { Invoke-SshCopyRound "SSH copy, $case" $sources[$case] $r }
        }
        if ($Part -contains 'Backup') { Invoke-BackupRound $r }
        if ($Part -contains 'Import') {
            $m = Measure-Process ($Pwsh + @('-NoProfile', '-Command', "[Math]::Round((Measure-Command { Import-Module '$ModulePath' }).TotalSeconds, 3)"))
            Add-Sample 'Import-Module OdaKvmBackup (fresh pwsh)' 'Import-Module' $r ([double]$m.Output.Trim())
        }
        Write-Host "  round $r done"
    }
}
finally {
    if ($Part -contains 'Backup') { Invoke-LabVirsh @('destroy', $Vm) -AllowFailure | Out-Null }
    Remove-Item -Recurse -Force $scratch -ErrorAction SilentlyContinue
}

# ---------------------------------------------------------------- the table
$rows = foreach ($group in $samples | Group-Object Case, Method) {
    $first = $group.Group[0]
    $median = Get-Median ([double[]]@($group.Group.Seconds))
    $size = if ($first.Case -like '*(a)*') { 1024 } elseif ($first.Case -like '*(b)*') { 2048 } else { $null }
    [pscustomobject]@{
        Case = $first.Case
        Method = $first.Method
        'Median s' = '{0:0.00}' -f $median
        'Min s' = '{0:0.00}' -f ($group.Group.Seconds | Measure-Object -Minimum).Minimum
        'MiB/s' = if ($size) { '{0:0}' -f ($size / $median) } else { '' }
        'Check s' = if ($first.PSObject.Properties['Check']) { '{0:0.00}' -f (Get-Median ([double[]]@($group.Group.Check))) } else { '' }
        'Process s' = if ($first.PSObject.Properties['Process']) { '{0:0.00}' -f (Get-Median ([double[]]@($group.Group.Process))) } else { '' }
        'On wire MiB' = if ($first.PSObject.Properties['Wire']) { '{0:0.0}' -f ((Get-Median ([double[]]@($group.Group.Wire))) / 1MB) } else { '' }
        'Allocated MiB' = if ($first.PSObject.Properties['Allocated']) { '{0:0.0}' -f ($first.Allocated / 1MB) } else { '' }
        'On overlay (last round)' = if ($first.PSObject.Properties['Exposure']) { $group.Group[-1].Exposure } else { '' }
    }
}
$rows | Format-Table -AutoSize -Wrap | Out-String -Width 300 | Out-Host
if ($VerbosePreference -eq 'Continue') { $samples | Sort-Object Case, Method, Round | Format-Table Case, Method, Round, Seconds -AutoSize | Out-String -Width 300 | Out-Host }
Write-Host ("Rounds per method: {0}. Seconds are for the copy alone ('Check s': the read-back check, which runs after the VM is committed; 'Process s': the whole fresh process, pwsh start included). Load average at end: {1}. {2}." -f $Rounds, (((Get-Content /proc/loadavg) -split ' ')[0..2] -join ' '), $CacheNote)
