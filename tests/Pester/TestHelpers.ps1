# Dot-sourced by the Pester files: the built module, the lab, and checks that read libvirt and the files
# directly (with virsh, qemu-img, e2fsck), never through the module under test.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:RepoRoot = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
$script:ModuleManifest = Join-Path $RepoRoot 'out/OdaKvmBackup/OdaKvmBackup.psd1'
if (-not (Test-Path $ModuleManifest)) { throw "The module is not built: run ./build.ps1 -Task Build first ($ModuleManifest)." }
Import-Module $ModuleManifest -Force
Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmLab.psm1') -Force
$script:SnapshotName = 'FILE_STAGE_BACKUP.TEMP'
if (-not $env:ODAKVMBACKUP_STATE_DIR -or -not $env:ODAKVM_TEST_SCRATCH) { throw 'Run the Pester files through ./build.ps1 -Task Pester: it gives each run its own ODAKVMBACKUP_STATE_DIR.' }

function New-TestFolder([string] $Name) {
    $path = Join-Path $env:ODAKVM_TEST_SCRATCH ("{0}-{1}" -f $Name, [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Force -Path $path | Out-Null
    $path
}

function Invoke-Virsh([string[]] $Arguments, [switch] $AllowFailure) {
    (Invoke-LabVirsh -ArgumentList $Arguments -AllowFailure:$AllowFailure)
}

# Each disk's source and backing chain, from the domain XML as libvirt holds it (live, or --inactive).
function Get-DiskChain([string] $DomainName, [switch] $Inactive) {
    $args = @('dumpxml', $DomainName) + @(if ($Inactive) { '--inactive' })
    $xml = [xml](Invoke-Virsh $args).StdOut
    foreach ($disk in $xml.domain.devices.disk) {
        if ($disk.device -ne 'disk') { continue }
        $chain = @()
        $store = $disk.SelectSingleNode('backingStore')
        while ($store -and $store.SelectSingleNode('source')) {
            $chain += $store.source.file
            $store = $store.SelectSingleNode('backingStore')
        }
        [pscustomobject]@{ Target = $disk.target.dev; Source = $disk.source.file; Format = $disk.driver.type; Chain = $chain }
    }
}

function Get-LabDiskMap([string] $DomainName) {
    @{ vda = Get-LabDiskPath -Name $DomainName -Disk boot; vdb = Get-LabDiskPath -Name $DomainName -Disk data }
}

# True when every disk writes to its own file, in the running domain and in its saved definition. Each view must
# show exactly the lab's two disks: a view with no disk (or one) proves nothing and fails.
function Test-OnOwnDisks([string] $DomainName) {
    $expected = Get-LabDiskMap $DomainName
    $state = (Invoke-Virsh @('domstate', $DomainName)).StdOut.Trim()
    $views = @(, @(Get-DiskChain $DomainName -Inactive)) + @(if ($state -eq 'running') { , @(Get-DiskChain $DomainName) })
    foreach ($view in $views) {
        if ((@($view.Target | Sort-Object) -join ',') -ne 'vda,vdb') { return $false }
        foreach ($disk in $view) {
            if ($disk.Source -ne $expected[$disk.Target] -or $disk.Chain.Count -ne 0) { return $false }
        }
    }
    $true
}

function Get-SnapshotNames([string] $DomainName) {
    @((Invoke-Virsh @('snapshot-list', '--domain', $DomainName, '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ })
}

# Files left beside the disks other than the disks themselves (overlays, partial files ...).
function Get-StrayDiskFolderFiles([string] $DomainName) {
    $disks = (Get-LabDiskMap $DomainName).Values
    foreach ($folder in $disks | ForEach-Object { Split-Path $_ } | Sort-Object -Unique) {
        Get-ChildItem -LiteralPath $folder -File -Force | Where-Object FullName -notin $disks | ForEach-Object FullName
    }
}

# Reads a file of a running guest's disk image consistently: the guest's file systems are frozen meanwhile.
function Read-LiveGuestFile([string] $DomainName, [string] $Image, [string] $GuestPath) {
    Invoke-Virsh @('domfsfreeze', $DomainName) | Out-Null
    try { Get-LabImageFile -Path $Image -GuestPath $GuestPath }
    finally { Invoke-Virsh @('domfsthaw', $DomainName) | Out-Null }
}

# qemu-img check of a backup copy: raw images have no checks (exit 63), qcow2 must report no errors.
function Test-ImageCheck([string] $Path) {
    $out = & qemu-img check $Path 2>&1 | Out-String
    $LASTEXITCODE -eq 0 -or ($LASTEXITCODE -eq 63 -and $out -match 'does not support checks')
}

function Get-ImageFormat([string] $Path) {
    (& qemu-img info --output=json -U $Path | ConvertFrom-Json).format
}

function Get-AllocatedBytes([string] $Path) {
    $blocks, $size = (& stat -c '%b %B' $Path) -split ' '
    [long]$blocks * [long]$size
}

# Puts a lab VM back into a known good state when a test left it otherwise (running, agent up, own disks, no
# journal of this test run's state folder).
function Reset-LabVmIfNeeded([string] $DomainName) {
    $journal = Join-Path $env:ODAKVMBACKUP_STATE_DIR "journal/d-$DomainName.json"
    $state = (Invoke-Virsh @('domstate', $DomainName) -AllowFailure).StdOut.Trim()
    if ((Test-Path $journal) -or $state -ne 'running' -or -not (Test-OnOwnDisks $DomainName) -or (Get-StrayDiskFolderFiles $DomainName) -or (Get-SnapshotNames $DomainName)) {
        Remove-Item -Force -ErrorAction SilentlyContinue $journal
        Reset-LabVm -Name $DomainName
    }
    Wait-LabGuestAgent -DomainName $DomainName | Out-Null
}

function Wait-Until([scriptblock] $Condition, [string] $What, [int] $TimeoutSeconds = 120) {
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while (-not (& $Condition)) {
        if ((Get-Date) -gt $deadline) { throw "Timed out after $TimeoutSeconds s waiting for: $What" }
        Start-Sleep -Milliseconds 100
    }
}

# The guest's own writes: tests/Lab/guest/init appends 'tick <n> <uptime>' to /mnt/a/ticks.log every 0.5 s, each
# fsynced. After a test that backs up a running VM, the ticks written since the last check must all be on the VM's
# own disk (read from its image, frozen, and compared with what the guest reads), numbered without a hole, and never
# more than $TickGapLimitSeconds apart: a longer gap means the guest's writes stood still that long (a freeze that
# lasted, writes blocked by a commit or a pivot). The uptime is the guest's own clock, which stops while QEMU pauses
# the whole VM (virsh suspend for 6 s showed no gap): a pause is not seen here, a stall of the guest's I/O is.
# The limit: 10 tick periods. Over 82 checks in the runs of 2026-12-06 (every file that calls this, the lab's 2
# shared cores also running other helpers' tests and builds, load about 1.5), the largest gap between two ticks was
# 1.82 s during a backup, 2.02 s during a boot (tick 1 to 2, while qemu-ga starts); a 6 s freeze gave 6.7 s.
$script:TickGapLimitSeconds = 5
$script:TicksChecked = @{}

function Assert-GuestTicks([string[]] $DomainName, [double] $MaxGapSeconds = $TickGapLimitSeconds) {
    foreach ($name in $DomainName) {
        $image = @(Get-DiskChain $name | Where-Object Target -eq vda)[0].Source
        $guest = @()
        if ((Invoke-Virsh @('domstate', $name)).StdOut.Trim() -eq 'running') {
            Wait-LabGuestAgent -DomainName $name -TimeoutSeconds 60 | Out-Null
            $guest = @((Invoke-LabGuestCommand -DomainName $name -Command 'cat /mnt/a/ticks.log').StdOut -split "`n" | Where-Object { $_ })
            $lines = @((Read-LiveGuestFile $name $image /ticks.log) -split "`n" | Where-Object { $_ })
        }
        else { $lines = @((Get-LabImageFile -Path $image -GuestPath /ticks.log) -split "`n" | Where-Object { $_ }) }
        $problems = [System.Collections.Generic.List[string]]::new()
        for ($i = 0; $i -lt $guest.Count; $i++) {
            if ($i -ge $lines.Count -or $lines[$i] -ne $guest[$i]) { $problems.Add("line $($i + 1) of ticks.log reads '$($guest[$i])' in the guest but '$(if ($i -lt $lines.Count) { $lines[$i] })' on its disk $image"); break }
        }
        # Only the ticks since the last check of this file (a VM made anew starts a new file).
        $seen = $script:TicksChecked[$name]
        $from = if ($seen -and $lines.Count -ge $seen.Count -and $lines[$seen.Count - 1] -eq $seen.Last) { $seen.Count - 1 } else { 0 }
        $largest = 0.0; $largestAt = ''
        for ($i = $from; $i -lt $lines.Count; $i++) {
            if ($lines[$i] -notmatch '^tick (\d+) (\d+\.\d+)$') { $problems.Add("line $($i + 1) of ticks.log on $image is damaged: '$($lines[$i])'"); continue }
            $n = [int]$Matches[1]; $up = [double]$Matches[2]
            if ($i -gt $from -and $n -ne 1 -and $lines[$i - 1] -match '^tick (\d+) (\d+\.\d+)$') {
                $pn = [int]$Matches[1]; $pup = [double]$Matches[2]
                if ($n -ne $pn + 1) { $problems.Add("ticks $($pn + 1)..$($n - 1) are missing from ticks.log on $image (between uptime $pup and $up s)") }
                if ($up - $pup -gt $largest) { $largest = $up - $pup; $largestAt = "tick $pn at uptime $pup s and tick $n at $up s" }
                if ($up - $pup -gt $MaxGapSeconds) { $problems.Add(("the guest of {0} wrote no tick for {1:0.00} s (limit {2} s), between tick {3} at uptime {4} s and tick {5} at {6} s" -f $name, ($up - $pup), $MaxGapSeconds, $pn, $pup, $n, $up)) }
            }
        }
        Write-Host ("[ticks] {0}: {1} ticks checked, largest gap {2:0.00} s ({3})" -f $name, ($lines.Count - $from), $largest, $largestAt)
        if ($lines.Count) { $script:TicksChecked[$name] = @{ Count = $lines.Count; Last = $lines[-1] } }
        $problems | Should -BeNullOrEmpty -Because "the guest of $name writes a tick every 0.5 s, each fsynced"
    }
}

. (Join-Path $PSScriptRoot 'ProofHelpers.ps1')

# libvirtd's own record of the snapshots it was asked for: from Start- to Stop-LibvirtSnapshotLog its snapshot code
# (the API entry virDomainSnapshotCreateXML, which every 'virsh snapshot-create-as' goes through, and the QEMU
# driver's snapshot steps) logs at debug level into a file of the test's own, beside its usual log. Stop- puts the
# daemon's outputs and filters back as they were (the daemon is shared: only under the lab lock, and always in a
# finally) and returns the snapshot requests libvirtd received for $DomainName.
function Start-LibvirtSnapshotLog {
    $read = { param($what) ((& virt-admin "daemon-log-$what" | Out-String) -replace '(?s)^\s*Logging \w+:\s*', '').Trim() }
    $probe = [pscustomobject]@{
        File = Join-Path $env:ODAKVM_TEST_SCRATCH "libvirtd-snapshots-$([guid]::NewGuid().ToString('N').Substring(0, 8)).log"
        Outputs = & $read outputs
        Filters = & $read filters
    }
    if (-not $probe.Outputs) { throw 'virt-admin daemon-log-outputs names no output: is libvirtd running?' }
    New-Item -ItemType Directory -Force -Path $env:ODAKVM_TEST_SCRATCH | Out-Null
    & virt-admin daemon-log-filters (("$($probe.Filters) 1:snapshot").Trim()) | Out-Null
    & virt-admin daemon-log-outputs "$($probe.Outputs) 1:file:$($probe.File)" | Out-Null
    if ($LASTEXITCODE) { & virt-admin daemon-log-filters $probe.Filters | Out-Null; throw 'virt-admin could not add a log output to libvirtd.' }
    $probe
}

function Stop-LibvirtSnapshotLog($Probe, [string] $DomainName) {
    & virt-admin daemon-log-outputs $Probe.Outputs | Out-Null
    & virt-admin daemon-log-filters $Probe.Filters | Out-Null
    if (-not (Test-Path -LiteralPath $Probe.File)) { throw "libvirtd did not open its log $($Probe.File): the probe saw nothing and proves nothing." }
    @(Get-Content -LiteralPath $Probe.File | Where-Object { $_ -match "virDomainSnapshotCreateXML:\d+ : dom=\S+ \(VM: name=$([regex]::Escape($DomainName)), " })
}
