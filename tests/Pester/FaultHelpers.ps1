# Fault injection on the real lab: runs a backup of $FaultVm in a background runspace (so the test can stop it
# as Ctrl+C does) or in a child pwsh process (so the test can SIGKILL it), waits for a chosen point, injects.
$script:FaultVm = 'linux_vm3'
$script:LabModule = Join-Path $RepoRoot 'tests/Lab/OdaKvmLab.psm1'
$script:JournalFile = (Join-Path $env:ODAKVMBACKUP_STATE_DIR "journal/d-$FaultVm.json")

# What the guest writes right after the snapshot: a marker on both disks, and 8 MiB (so that the commit has work)
# with its SHA-256 beside it, so that the recovered disks can be checked byte for byte.
$script:DuringWrites = 'echo @MARKER@ > /mnt/a/marker.txt; echo @MARKER@ > /mnt/b/marker.txt; dd if=/dev/urandom of=/mnt/b/during bs=1M count=8 conv=fsync 2>/dev/null; sha256sum /mnt/b/during | cut -c1-64 > /mnt/b/during.sha256; sync'

# The backup script: after the snapshot, the guest makes the writes above, then the chosen point is signalled.
# Throttles make the copy or the commit last long enough.
function New-BackupScript {
    param([ValidateSet('AfterSnapshot', 'DuringCopy', 'DuringCommit', 'None')] [string] $Point,
          [string] $Destination, [string] $Retention, [string] $Signal, [string] $Marker, [string] $Transcript)
    $copyLimit = if ($Point -eq 'DuringCopy') { 2 } else { 0 }
    $commitLimit = if ($Point -eq 'DuringCommit') { 1 } else { 0 }
    $hold = if ($Point -eq 'AfterSnapshot') { 'Start-Sleep -Seconds 600' } else { '' }
    $writes = $script:DuringWrites -creplace '@MARKER@', $Marker
    $start = if ($Transcript) { "Start-Transcript -Path '$Transcript' -Force | Out-Null" } else { '' }
    @"
$start
`$ErrorView = 'NormalView'; `$PSStyle.OutputRendering = 'PlainText'
Import-Module '$ModuleManifest'
Import-Module '$LabModule'
Get-VmDisk $FaultVm | New-KvmDiskSnapshot |
    ForEach-Object -Begin { `$first = `$true } -Process {
        if (`$first) {
            `$first = `$false
            `$r = Invoke-LabGuestCommand -DomainName $FaultVm -Command '$writes'
            if (`$r.ExitCode -ne 0) { throw "guest write failed: `$(`$r.StdErr)" }
            Set-Content -Path '$Signal' -Value snapshot
            $hold
        }
        `$_
    } |
    Copy-VmDisk -Destination '$Destination' -BandwidthLimit $copyLimit |
    Invoke-BlockCommit -BandwidthLimit $commitLimit |
    Move-OverlayToRetention -Path '$Retention'
"@
}

# A pipeline stage for the in-process tests: once, right after the snapshot, the guest writes the run's marker on
# both disks (then -AlsoInGuest in the guest, then -Then here); every object passes on unchanged.
function Add-GuestWritesAfterSnapshot {
    param([Parameter(ValueFromPipeline)] $InputObject, [string] $Marker, [string] $AlsoInGuest = '', [scriptblock] $Then)
    begin { $first = $true }
    process {
        if ($first) {
            $first = $false
            $r = Invoke-LabGuestCommand -DomainName $FaultVm -Command "$($script:DuringWrites -creplace '@MARKER@', $Marker); $AlsoInGuest"
            if ($r.ExitCode -ne 0) { throw "guest write failed: $($r.StdErr)" }
            if ($Then) { & $Then }
        }
        $InputObject
    }
}

function Test-BlockJobRunning([string] $DomainName) {
    foreach ($target in 'vda', 'vdb') {
        if ((Invoke-Virsh @('blockjob', $DomainName, $target, '--info', '--raw') -AllowFailure).StdOut -match 'type=') { return $true }
    }
    $false
}

function Wait-FaultPoint([string] $Point, [string] $Signal, [string] $Destination, $Job) {
    # A backup that failed before the point would make the wait run out: fail at once, with its errors.
    Wait-Until {
        if ($Job -and $Job.Handle.IsCompleted -and -not (Test-Path $Signal)) { throw "The backup ended before the snapshot: $($Job.PowerShell.Streams.Error | Out-String)" }
        Test-Path $Signal
    } 'the snapshot (signal file)'
    switch ($Point) {
        'DuringCopy' { Wait-Until { Get-ChildItem -Recurse -Filter '*.partial' -Path $Destination -ErrorAction SilentlyContinue } 'a copy in progress (.partial file)'; Start-Sleep -Milliseconds 500 }
        'DuringCommit' { Wait-Until { Test-BlockJobRunning $FaultVm } 'a block commit job' }
    }
}

# Right before a fault is injected, the guest writes the fault window's own marker on both disks: what a guest
# writes while the fault hits must survive it too. The fault window opens here (the guest writer goes on writing).
function Write-WindowMarker($Run) {
    $r = Invoke-LabGuestCommand -DomainName $FaultVm -Command "echo $($Run.WindowMarker) > /mnt/a/window.txt; echo $($Run.WindowMarker) > /mnt/b/window.txt; sync"
    if ($r.ExitCode -ne 0) { throw "guest write failed: $($r.StdErr)" }
    Open-FaultWindow $Run.Writer
}

# Seconds from the fault until $Pattern first appears in a file the backup process writes (its stderr), or $null
# when the process ended without it.
function Measure-UntilText([string] $Path, [string] $Pattern, [Diagnostics.Stopwatch] $Watch, $Process, [int] $TimeoutSeconds = 180) {
    while ($Watch.Elapsed.TotalSeconds -lt $TimeoutSeconds) {
        if ((Test-Path $Path) -and ((Get-Content -Raw $Path) -match $Pattern)) { return $Watch.Elapsed.TotalSeconds }
        if ($Process.HasExited) { return $null }
        Start-Sleep -Milliseconds 100
    }
    $null
}

# SIGKILL of a process and the processes it started (virsh): as a host that loses the whole session, so that no
# orphaned virsh finishes the job behind the test's back.
function Stop-ProcessTree([int] $ProcessId) {
    $children = @((& pgrep -P $ProcessId) | Where-Object { $_ })
    & kill -KILL $ProcessId @children
}

# Runs the backup in a runspace of this process, bound to this host; returns what Start-FaultRun made.
function Start-BackgroundBackup([string] $Script) {
    $runspace = [runspacefactory]::CreateRunspace($Host)
    $runspace.Open()
    $ps = [powershell]::Create()
    $ps.Runspace = $runspace
    $null = $ps.AddScript($Script)
    [pscustomobject]@{ PowerShell = $ps; Handle = $ps.BeginInvoke(); Runspace = $runspace }
}

# A child pwsh runs the backup. With -StopFile it runs it in a runspace bound to its console host and calls
# Stop() (what Ctrl+C does) once that file appears; right after Stop() returns it prints the domain's disks.
function Start-BackupProcess([string] $Script, [string] $Folder, [string] $StopFile) {
    $file = Join-Path $Folder 'backup.ps1'
    Set-Content -Path $file -Value $Script
    if ($StopFile) {
        $wrapper = Join-Path $Folder 'stop-wrapper.ps1'
        Set-Content -Path $wrapper -Value @"
`$runspace = [runspacefactory]::CreateRunspace(`$Host)
`$runspace.Open()
`$ps = [powershell]::Create()
`$ps.Runspace = `$runspace
`$null = `$ps.AddScript((Get-Content -Raw '$file'))
`$handle = `$ps.BeginInvoke()
while (-not (Test-Path '$StopFile') -and -not `$handle.IsCompleted) { Start-Sleep -Milliseconds 50 }
`$ps.Stop()
'AFTER-STOP'
& virsh -c qemu:///system domblklist $FaultVm
"@
        $file = $wrapper
    }
    Start-Process -FilePath ([Environment]::ProcessPath) -PassThru `
        -ArgumentList @([Environment]::GetCommandLineArgs()[0], '-NoProfile', '-NonInteractive', '-File', $file) `
        -RedirectStandardOutput (Join-Path $Folder 'stdout.txt') -RedirectStandardError (Join-Path $Folder 'stderr.txt')
}

# A fault run's folders and markers; unless -NoWriter, the guest writer starts (Start-GuestWriter) and the run's
# row of the fault table is opened.
function New-FaultRun([string] $Name, [switch] $NoWriter) {
    $folder = New-TestFolder "fault-$Name"
    $run = [pscustomobject]@{
        Folder = $folder
        Destination = (New-Item -ItemType Directory -Path (Join-Path $folder 'backup')).FullName
        Retention = (New-Item -ItemType Directory -Path (Join-Path $folder 'retention')).FullName
        Signal = Join-Path $folder 'signal'
        Marker = "marker-$Name-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        WindowMarker = "window-$Name-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        Transcript = Join-Path $folder 'transcript.txt'
        Writer = $null
        Row = $null
    }
    if (-not $NoWriter) {
        $run.Row = New-FaultRow $Name $FaultVm
        $run.Writer = $run.Row.Writer
    }
    $run
}

# What every fault must end in: own disks, nothing left over, what the guest wrote during the backup (markers
# after the snapshot and at the fault, and 8 MiB checked byte for byte) in its disks, clean file systems, every
# record the guest writer reported done read back from both disks (Assert-GuestWrites: some written while the fault
# was in effect, the window the test closed when the rollback or repair ended), a next backup that works, and the
# guest's ticks without a gap. Then the run's row of the fault table is complete.
function Assert-Recovered([string] $Name, $Run, [switch] $SkipNextBackup, [switch] $NoWindowMarker) {
    $onOverlays = if (Test-OnOwnDisks $FaultVm) { 0 } else { 1 }
    $boot = Get-LabDiskPath -Name $FaultVm -Disk boot
    $data = Get-LabDiskPath -Name $FaultVm -Disk data
    $lost = [System.Collections.Generic.List[string]]::new()
    Invoke-Virsh @('domfsfreeze', $FaultVm) | Out-Null
    try {
        foreach ($image in $boot, $data) {
            if ((Get-LabImageFile -Path $image -GuestPath /marker.txt) -notmatch $Run.Marker) { $lost.Add("marker in $image") }
            if (-not $NoWindowMarker -and (Get-LabImageFile -Path $image -GuestPath /window.txt) -notmatch $Run.WindowMarker) { $lost.Add("fault-window marker in $image") }
            $check = Test-LabImageFileSystem -Path $image
            $check.Clean | Should -BeTrue -Because "the file system on $image must check clean: $($check.Output)"
        }
        $expected = (Get-LabImageFile -Path $data -GuestPath /during.sha256).Trim()
        if ((Get-LabImageFileHash -Path $data -GuestPath /during) -ne $expected) { $lost.Add('8 MiB written after the snapshot (SHA-256 differs)') }
    }
    finally { Invoke-Virsh @('domfsthaw', $FaultVm) | Out-Null }
    $onOverlays | Should -Be 0 -Because 'every disk must write to its own file again'
    $lost | Should -BeNullOrEmpty -Because 'the guest wrote on both disks during the backup and at the fault'
    Get-SnapshotNames $FaultVm | Should -BeNullOrEmpty
    Get-StrayDiskFolderFiles $FaultVm | Should -BeNullOrEmpty
    Test-Path $JournalFile | Should -BeFalse
    $null = Assert-GuestWrites $Run.Writer
    if (-not $SkipNextBackup) {
        $next = New-FaultRun "$Name-next" -NoWriter
        $objects = Get-VmDisk $FaultVm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $next.Destination | Invoke-BlockCommit | Move-OverlayToRetention -Path $next.Retention
        @($objects).Count | Should -Be 2
        (Get-Content -Raw (Join-Path $objects[0].BackupSet 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Complete'
        Test-OnOwnDisks $FaultVm | Should -BeTrue
    }
    Assert-GuestTicks $FaultVm
    Complete-FaultRow $Run.Row $Name
}

function Get-SetStatus([string] $Destination) {
    $manifest = Get-ChildItem -Recurse -Filter backup.json -Path $Destination | Select-Object -First 1
    if ($manifest) { (Get-Content -Raw $manifest.FullName | ConvertFrom-Json).Status } else { $null }
}
