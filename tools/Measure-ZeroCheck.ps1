<#
.SYNOPSIS
    What the read-back of a copy on an SSH server costs there: the SHA-256 of its segments that hold data, the check
    that its segments of zeros read as zeros, and, for comparison, hashing those zeros instead.
.DESCRIPTION
    Uses the built module's store against the lab's sshd on loopback (alias odakvm-backup, started here if it is not
    running); run it under the lab lock. The copy is a sparse file of -SizeGiB with -DataSegments
    16 MiB segments of random data spread evenly, as a thin vdisk that holds little, made in -Folder (the server is
    this host). Prints the median of -Rounds rounds, each after the file's pages were dropped from the cache.
.EXAMPLE
    flock /var/lock/odakvm-lab.lock dotnet pwsh -NoProfile -File tools/Measure-ZeroCheck.ps1 -ModulePath out/OdaKvmBackup/OdaKvmBackup.psd1
#>
param(
    [Parameter(Mandatory)] [string] $ModulePath,
    [string] $Folder = '/var/tmp/odakvm-zerocheck',
    [int] $SizeGiB = 8,
    [int] $DataSegments = 32,
    [int] $Rounds = 3
)
$ErrorActionPreference = 'Stop'
Import-Module (Join-Path $PSScriptRoot '../tests/Lab/OdaKvmSshLab.psm1') -Force
$null = Start-LabSshd
$coreAssembly = [Reflection.Assembly]::LoadFrom((Join-Path (Split-Path (Resolve-Path $ModulePath)) 'OdaKvmBackup.Core.dll'))
# The core's engine types are internal: no [type] literal reaches them, their public static members do.
$segment = $coreAssembly.GetType('OdaKvmBackup.Core.Copies.SparseCopy', $true)::SegmentSize
$count = $SizeGiB * 1GB / $segment
$every = [long]($count / $DataSegments)

New-Item -ItemType Directory -Force -Path $Folder | Out-Null
$file = Join-Path $Folder 'copy'
Remove-Item -Force -ErrorAction SilentlyContinue $file
& truncate -s "${SizeGiB}G" $file
$data = [long[]]@(for ($i = 0; $i -lt $DataSegments; $i++) { $i * $every })
foreach ($index in $data) { & dd if=/dev/urandom of=$file bs=16M count=1 seek=$index conv=notrunc status=none }
& sync
$zeros = [long[]]@(0..($count - 1) | Where-Object { $_ -notin $data })
# Runs of segments without data, as the module asks for them.
$ranges = [System.Collections.Generic.List[System.ValueTuple[long, long]]]::new()
$start = -1
for ($i = 0; $i -le $count; $i++) {
    $isZero = $i -lt $count -and $i -notin $data
    if ($isZero -and $start -lt 0) { $start = $i }
    elseif (-not $isZero -and $start -ge 0) { $ranges.Add([System.ValueTuple[long, long]]::new($start * $segment, ($i - $start) * $segment)); $start = -1 }
}

$none = [Threading.CancellationToken]::None
$runner = [Activator]::CreateInstance($coreAssembly.GetType('OdaKvmBackup.Core.Host.CliWrapProcessRunner', $true), @($coreAssembly.GetType('OdaKvmBackup.Core.Host.NullSink', $true)::Instance))
$store = $coreAssembly.GetType('OdaKvmBackup.Core.Stores.BackupStores', $true)::Open("odakvm-backup:$Folder", $runner, 'Destination')
function Measure-Step([scriptblock] $Step) {
    $times = foreach ($round in 1..$Rounds) {
        & dd if=$file iflag=nocache count=0 status=none
        $watch = [Diagnostics.Stopwatch]::StartNew()
        & $Step
        $watch.Elapsed.TotalSeconds
    }
    ($times | Sort-Object)[[int][Math]::Floor($Rounds / 2)]
}
$found = $null
$digests = Measure-Step { $null = $store.SegmentDigestsAsync('copy', $segment, $data, $none).GetAwaiter().GetResult() }
$check = Measure-Step { $script:found = $store.FindNonZeroAsync('copy', $ranges, $none).GetAwaiter().GetResult() }
$hashed = Measure-Step { $null = $store.SegmentDigestsAsync('copy', $segment, $zeros, $none).GetAwaiter().GetResult() }
if (@($found).Count -ne 0) { throw "The check of zeros found data at $($found -join ', '): it should find none." }
$null = $store.DisposeAsync().AsTask().GetAwaiter().GetResult()
Remove-Item -Force $file
[pscustomobject]@{
    Copy                  = "$SizeGiB GiB sparse, $DataSegments segments of 16 MiB hold data, $($zeros.Count) are zeros ($($ranges.Count) runs)"
    'Digests of data s'   = [Math]::Round($digests, 2)
    'Check of zeros s'    = [Math]::Round($check, 2)
    'Zeros hashed s'      = [Math]::Round($hashed, 2)
    'Server cores'        = [Environment]::ProcessorCount
} | Format-List
