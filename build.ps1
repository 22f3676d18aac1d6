#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, tests and demonstrates OdaKvmBackup.
.DESCRIPTION
    Tasks (several may be given, comma-separated, run in order):
      Bootstrap  restore the pinned pwsh tool and fetch Pester 5 from NuGet
      Build      publish the module to out/OdaKvmBackup (manifest, DLLs, format file), then its help: tools/HelpBuilder
                 turns docs/help into en-US/OdaKvmBackup.dll-Help.xml and en-US/about_*.help.txt, with syntax and
                 parameter attributes read from the built cmdlets (it warns where docs/help disagrees with them)
      Package    a .nupkg of the built module in out/packages, made by Publish-PSResource (for offline installs)
      UpdateHelp Build, then rewrite docs/help from the built cmdlets (like PlatyPS Update-MarkdownHelp): each page's
                 SYNTAX and parameter yaml blocks; a stub for a new parameter, page or output type; stale parameter
                 sections dropped. Hand-written text is kept. Fill in every {{ TODO ... }}: the help check fails on it
      UnitTest   xunit tests of the core and of tools/HelpBuilder (no libvirt needed)
      Format     dotnet format whitespace --verify-no-changes on the solution (the SDK's own, offline): fails when a
                 file does not follow .editorconfig, and says how to fix it. Part of Test
      Mutate     mutation testing (Stryker.NET, tools/stryker/stryker-config.json) of the safety logic: the run, its
                 steps and its rollback (Run/BackupRun.cs, Run/BackupRun.Steps.cs), the lease (Run/RunLease.cs),
                 Repair-KvmBackup (Run/RepairService.cs), the way back both take (Run/RunCloser.cs), the journal
                 (RunState/RunJournal.cs, RunState/RunRecord.cs) and the names (Paths/BackupNames.cs);
                 each mutant against their unit tests, one at a time under nice -n 19. Prints the score and every
                 surviving mutant, writes the HTML and JSON reports under out/stryker. Not part of Test (it takes
                 tens of minutes; no lab needed). The config leaves out string mutants (message text), progress and
                 verbose calls, and ConfigureAwait: its false->true mutants are equivalent here, since the core runs
                 without a SynchronizationContext (pwsh's pipeline thread and the thread pool have none).
                 The survivors and what was done with each: docs/mutation-survivors.md
      Lab        bring up the real libvirt + QEMU lab (installs packages; root)
      Pester     Pester tests of the built module against the lab, in a child pwsh
      FaultTable docs/fault-table.md from what the fault tests measured in their last run (out/fault-table/*.json,
                 written by every Pester file that calls Save-FaultRows); refuses when one of them did not run or
                 a fault test failed. Commit the file it writes
      Test       Bootstrap, Build, Format, UnitTest, Lab, Pester, FaultTable: every test; fails if any test fails or is
                 skipped
      Demo       Build, Lab, then a real hot backup of linux_vm with the README's one-liner
      Bench      the copy engine, SSH copies and the one-liner against cp, scp, tar and the steps by hand, side by side
      BenchIncremental
                 chain-free incrementals (issue 15) on a VM with a 4 GiB qcow2 boot disk and a 16 GiB raw vdisk, to the
                 lab's sshd on XFS with reflink: the second backup after two change patterns against rsync --inplace by
                 hand (bytes on the wire, space stored, time on the overlay against cat and against the procedure
                 bare: snapshot, cat, blockcommit --pivot, the whole backup), and the first, full backup against
                 today's module (main at 99b89e9, built once under /var/tmp/okb-base);
                 tools/Measure-Incremental.ps1, -BenchRounds N. Hold the lab lock; needs about 40 GB free on /var/tmp
      LabDown    tear the lab down
      Clean      remove out/
.EXAMPLE
    ./build.ps1 -Task Test
.EXAMPLE
    ./build.ps1 -Task UpdateHelp
    After adding or changing a cmdlet parameter: brings docs/help in line, then review the diff with git.
#>
[CmdletBinding()]
param(
    [string[]] $Task = @('Build'),
    # Pester files or folders to run (default: all of tests/Pester).
    [string[]] $PesterPath = @(),
    [int] $BenchRounds = 3
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$Root = $PSScriptRoot
$Out = Join-Path $Root 'out'
$ModuleOut = Join-Path $Out 'OdaKvmBackup'
$PesterVersion = '5.7.1'
$PesterModules = Join-Path $Out 'modules'
$HelpDocs = Join-Path $Root 'docs/help'
$HelpBuilderOut = Join-Path $Out 'tools/HelpBuilder'
# "Build,Test" arrives as one string when called as pwsh -File build.ps1 -Task Build,Test
$Task = @($Task | ForEach-Object { $_ -split ',' } | ForEach-Object Trim | Where-Object { $_ })
$PesterPath = @($PesterPath | ForEach-Object { $_ -split ',' } | ForEach-Object Trim | Where-Object { $_ })
$known = 'Bootstrap', 'Build', 'UpdateHelp', 'Package', 'UnitTest', 'Format', 'Mutate', 'Lab', 'Pester', 'FaultTable', 'Test', 'Demo', 'Bench', 'BenchIncremental', 'LabDown', 'Clean'
foreach ($t in $Task) { if ($t -notin $known) { throw "Unknown task '$t'. Tasks: $($known -join ', ')" } }

function Invoke-Native {
    param([string] $Program, [string[]] $Arguments)
    Write-Host "> $Program $($Arguments -join ' ')" -ForegroundColor DarkGray
    & $Program @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Program exited with code $LASTEXITCODE" }
}

function Invoke-Bootstrap {
    Invoke-Native dotnet @('tool', 'restore')
    $target = Join-Path $PesterModules "Pester/$PesterVersion"
    if (-not (Test-Path (Join-Path $target 'Pester.psd1'))) {
        Invoke-Native dotnet @('restore', (Join-Path $Root 'tools/PesterDownload/PesterDownload.csproj'), '--verbosity', 'quiet')
        $cache = if ($env:NUGET_PACKAGES) { $env:NUGET_PACKAGES } else { Join-Path $HOME '.nuget/packages' }
        $tools = Join-Path $cache "pester/$PesterVersion/tools"
        if (-not (Test-Path (Join-Path $tools 'Pester.psd1'))) { throw "Pester $PesterVersion was not found at $tools after the restore." }
        New-Item -ItemType Directory -Force -Path $target | Out-Null
        Copy-Item -Path (Join-Path $tools '*') -Destination $target -Recurse -Force
    }
    Write-Host "Pester $PesterVersion in $PesterModules"
}

function Publish-Module {
    $publish = Join-Path $Out 'publish'
    Invoke-Native dotnet @('publish', (Join-Path $Root 'src/OdaKvmBackup/OdaKvmBackup.csproj'), '-c', 'Release', '-o', $publish, '--nologo', '-v', 'quiet')
    if (Test-Path $ModuleOut) { Remove-Item -Recurse -Force $ModuleOut }
    New-Item -ItemType Directory -Force -Path $ModuleOut | Out-Null
    # An explicit list: never ship System.Management.Automation.dll (PowerShell brings its own).
    foreach ($file in 'OdaKvmBackup.dll', 'OdaKvmBackup.Core.dll', 'CliWrap.dll') {
        Copy-Item (Join-Path $publish $file) $ModuleOut
    }
    Copy-Item (Join-Path $Root 'module/OdaKvmBackup.format.ps1xml'), (Join-Path $Root 'LICENSE') $ModuleOut
    Copy-Item (Join-Path $Root 'module/Scripts') $ModuleOut -Recurse
    $version = ([xml](Get-Content -Raw (Join-Path $Root 'Directory.Build.props'))).Project.PropertyGroup.Version
    (Get-Content -Raw (Join-Path $Root 'module/OdaKvmBackup.psd1')) -replace "ModuleVersion\s*=\s*'[^']*'", "ModuleVersion        = '$version'" |
        Set-Content -NoNewline (Join-Path $ModuleOut 'OdaKvmBackup.psd1')
    Write-Host "Module $version built at $ModuleOut"
}

# The help tool is built once, and again only when its sources or the package versions change: dotnet build
# costs seconds even when there is nothing to do.
function Initialize-HelpBuilder {
    $dll = Join-Path $HelpBuilderOut 'HelpBuilder.dll'
    $sources = @(Get-ChildItem -Recurse -File -Path (Join-Path $Root 'tools/HelpBuilder') -Include '*.cs', '*.csproj', '*.ps1' |
            Where-Object FullName -NotMatch '[\\/](bin|obj)[\\/]') +
        @(Get-Item (Join-Path $Root 'Directory.Build.props'), (Join-Path $Root 'Directory.Packages.props'), (Join-Path $Root 'global.json'))
    $built = Get-Item -LiteralPath $dll -ErrorAction SilentlyContinue
    if ($built -and -not ($sources | Where-Object LastWriteTimeUtc -GT $built.LastWriteTimeUtc)) { return $dll }
    Invoke-Native dotnet @('build', (Join-Path $Root 'tools/HelpBuilder/HelpBuilder.csproj'), '-c', 'Release', '-o', $HelpBuilderOut, '--nologo', '-v', 'quiet') | Out-Host
    # dotnet build leaves an up-to-date DLL untouched: mark it, or every later run would build again.
    (Get-Item -LiteralPath $dll).LastWriteTimeUtc = [datetime]::UtcNow
    $dll
}

# The pwsh running this script: its executable, or its pwsh.dll when a .NET tool package lacks the executable.
function Get-ThisPwsh {
    $exe = Join-Path $PSHOME $(if ($IsWindows) { 'pwsh.exe' } else { 'pwsh' })
    if (Test-Path -LiteralPath $exe) { $exe } else { Join-Path $PSHOME 'pwsh.dll' }
}

# The tool reads the cmdlets from the built module in a child pwsh: this same pwsh, wherever it is installed.
function Invoke-HelpBuilder {
    param([string] $Mode, [string[]] $Arguments = @())
    $dll = Initialize-HelpBuilder
    $pwsh = Get-ThisPwsh
    $arguments = @($dll, $Mode, '--docs', $HelpDocs, '--module', (Join-Path $ModuleOut 'OdaKvmBackup.psd1'), '--pwsh', $pwsh) + $Arguments
    Write-Host "> dotnet $($arguments -join ' ')" -ForegroundColor DarkGray
    # The tool reports disagreements on stderr: show them as warnings, in order with the rest.
    & dotnet @arguments 2>&1 | ForEach-Object {
        if ($_ -is [System.Management.Automation.ErrorRecord]) { Write-Warning ("$_" -replace '^WARNING: ', '') } else { Write-Host $_ }
    }
    if ($LASTEXITCODE -ne 0) { throw "HelpBuilder $Mode exited with code $LASTEXITCODE" }
}

function Build-Help {
    $started = Get-Date
    Invoke-HelpBuilder build @('--out', (Join-Path $ModuleOut 'en-US'))
    Write-Host ("Help built in {0:0.00} s" -f ((Get-Date) - $started).TotalSeconds)
}

function Invoke-Build {
    Publish-Module
    Build-Help
}

function Invoke-UpdateHelp {
    Publish-Module
    Invoke-HelpBuilder update
    Build-Help
}

# A .nupkg that a PowerShell repository accepts, made by PSResourceGet itself, in a pwsh whose data folder is a
# scratch one: the builder's own repository registrations and module folders are never touched.
function Invoke-Package {
    $packages = Join-Path $Out 'packages'
    if (Test-Path $packages) { Remove-Item -Recurse -Force $packages }
    New-Item -ItemType Directory -Force -Path $packages | Out-Null
    $scratchHome = Join-Path $Out 'package-home'
    if (Test-Path $scratchHome) { Remove-Item -Recurse -Force $scratchHome }
    # It must exist: where it does not, .NET finds no data folder and PSResourceGet writes its list under the cwd.
    New-Item -ItemType Directory -Force -Path (Join-Path $scratchHome '.local/share') | Out-Null
    $script = "Register-PSResourceRepository -Name OdaKvmBackupBuild -Uri '$packages' -Trusted; Publish-PSResource -Path '$ModuleOut' -Repository OdaKvmBackupBuild"
    $saved = $env:HOME, $env:XDG_DATA_HOME
    $env:HOME = $scratchHome; $env:XDG_DATA_HOME = Join-Path $scratchHome '.local/share'
    try { & dotnet pwsh -NoProfile -NonInteractive -Command $script }
    finally { $env:HOME, $env:XDG_DATA_HOME = $saved; Remove-Item -Recurse -Force $scratchHome -ErrorAction SilentlyContinue }
    if ($LASTEXITCODE -ne 0) { throw "Publish-PSResource failed ($LASTEXITCODE)" }
    $nupkg = Get-ChildItem -Path $packages -Filter 'OdaKvmBackup.*.nupkg'
    if (-not $nupkg) { throw "No package was written to $packages" }
    Write-Host "Package: $($nupkg.FullName)"
}

function Invoke-UnitTest {
    $results = Join-Path $Out 'unit-results'
    if (Test-Path $results) { Remove-Item -Recurse -Force $results }
    foreach ($project in 'OdaKvmBackup.Core.Tests', 'OdaKvmBackup.WayBack.Tests', 'OdaKvmBackup.HelpBuilder.Tests') {
        $trxFile = Join-Path $results "$project.trx"
        Write-Host "> dotnet test $project" -ForegroundColor DarkGray
        & dotnet test (Join-Path $Root "tests/Unit/$project/$project.csproj") --nologo -v quiet `
            --logger 'console;verbosity=normal' --logger "trx;LogFileName=$project.trx" --results-directory $results
        $exitCode = $LASTEXITCODE
        if (-not (Test-Path $trxFile)) { throw "dotnet test of $project exited with code $exitCode and wrote no results ($trxFile): see the build output above." }
        # dotnet test exits 0 when tests are skipped or none are found: here both are failures, as in Pester.
        $trx = [xml](Get-Content -Raw $trxFile)
        $counters = $trx.TestRun.ResultSummary.Counters
        $ran = [int]$counters.total
        $notPassed = $ran - [int]$counters.passed
        # The failures again, last: a CI log is often read from its tail, and a thousand passing lines bury them.
        foreach ($result in @($trx.TestRun.Results.UnitTestResult | Where-Object outcome -ne 'Passed')) {
            $message = $result.SelectSingleNode('*[local-name()="Output"]/*[local-name()="ErrorInfo"]/*[local-name()="Message"]')
            Write-Host "NOT PASSED ($($result.outcome), $($result.duration)): $($result.testName)" -ForegroundColor Red
            if ($message) { Write-Host "    $($message.InnerText.Trim() -replace '\n', "`n    ")" -ForegroundColor Red }
        }
        Write-Host "$project`: $($counters.passed) passed, $($counters.failed) failed, $($counters.notExecuted) skipped or not run, of $ran"
        if ($ran -eq 0) { throw "$project ran no test at all: a run without tests is a failure." }
        if ($notPassed -ne 0 -or $exitCode -ne 0) { throw "$project`: $notPassed test(s) failed, were skipped or did not run (dotnet test exited with code $exitCode)." }
    }
}

# The layout of the code (.editorconfig) checked with the SDK's own dotnet format. Whitespace only: it takes ~20 s on
# the solution where the full `dotnet format` (style and analyzers too) takes ~2.5 min on this host's two cores.
function Invoke-FormatCheck {
    & dotnet format whitespace (Join-Path $Root 'OdaKvmBackup.sln') --verify-no-changes
    if ($LASTEXITCODE -ne 0) {
        throw "Some files do not follow .editorconfig (listed above). Fix them with: dotnet format whitespace OdaKvmBackup.sln, then review and commit the change."
    }
    Write-Host 'Every file follows .editorconfig (dotnet format whitespace).'
}

# Mutation testing of the safety logic: which files, which tests and which mutants are in
# tools/stryker/stryker-config.json. Stryker runs from that folder (in the repo root it would take the solution and
# refuse a list of test projects), one mutant at a time and at the lowest priority: the host's cores are shared.
function Invoke-Mutate {
    $report = Join-Path $Out 'stryker'
    if (Test-Path $report) { Remove-Item -Recurse -Force $report }
    $started = Get-Date
    Push-Location (Join-Path $Root 'tools/stryker')
    try {
        # Stryker has a tool manifest of its own (tools/stryker/.config): CI's tool restore at the root never needs it.
        Invoke-Native dotnet @('tool', 'restore')
        $arguments = @('-n', '19', 'dotnet', 'dotnet-stryker', '--config-file', 'stryker-config.json', '--output', $report, '--skip-version-check')
        Write-Host "> nice $($arguments -join ' ')" -ForegroundColor DarkGray
        & nice @arguments
        if ($LASTEXITCODE -ne 0) { throw "Stryker exited with code $LASTEXITCODE" }
    }
    finally { Pop-Location }
    $json = Get-ChildItem -Recurse -File -Path $report -Filter 'mutation-report.json' | Select-Object -First 1
    if (-not $json) { throw "Stryker wrote no mutation-report.json under $report." }
    # Stryker compiles every file of the project with its mutants and reports the others as ignored (or as compile
    # errors): the files mutated are those with a mutant that was tested or found without a test.
    $tested = 'Killed', 'Timeout', 'Survived', 'NoCoverage'
    $files = @((Get-Content -Raw $json.FullName | ConvertFrom-Json).files.PSObject.Properties | Where-Object { $_.Value.mutants | Where-Object status -In $tested })
    $mutants = @($files | ForEach-Object { $_.Value.mutants })
    $count = { param($status) @($mutants | Where-Object status -EQ $status).Count }
    $killed, $timeout, $survived, $noCoverage = (& $count 'Killed'), (& $count 'Timeout'), (& $count 'Survived'), (& $count 'NoCoverage')
    # The score as Stryker defines it: killed and timed out over every mutant that compiled and was not ignored.
    $valid = $killed + $timeout + $survived + $noCoverage
    $score = if ($valid) { 100.0 * ($killed + $timeout) / $valid } else { 0 }
    Write-Host ("Mutation score of the safety logic ({0} files): {1:0.00} % ({2} killed, {3} timeout, {4} survived, {5} no coverage; {6} ignored, {7} compile errors) in {8:0.0} min" -f
        $files.Count, $score, $killed, $timeout, $survived, $noCoverage, (& $count 'Ignored'), (& $count 'CompileError'), ((Get-Date) - $started).TotalMinutes)
    foreach ($file in $files) {
        foreach ($m in @($file.Value.mutants | Where-Object status -In 'Survived', 'NoCoverage')) {
            Write-Host ("  {0} {1}:{2} {3}: {4}" -f $m.status, ($file.Name -replace '^.*?(src/)', '$1'), $m.location.start.line, $m.mutatorName, $m.replacement)
        }
    }
    Write-Host "Reports: $((Get-ChildItem -Recurse -File -Path $report -Include 'mutation-report.html', 'mutation-report.json').FullName -join ', ')"
}

function Invoke-Lab {
    Import-Module (Join-Path $Root 'tests/Lab/OdaKvmLab.psm1') -Force
    Initialize-Lab -VmName linux_vm
}

function Invoke-Pester5 {
    # Every file by default, the lab's teardown test last (it takes the lab down and brings it back).
    $paths = if ($PesterPath) { $PesterPath } else {
        $files = @(Get-ChildItem -Path (Join-Path $Root 'tests/Pester') -Filter '*.Tests.ps1' | Sort-Object Name)
        @($files | Where-Object Name -ne 'Teardown.Tests.ps1' | ForEach-Object FullName) + @($files | Where-Object Name -eq 'Teardown.Tests.ps1' | ForEach-Object FullName)
    }
    $script = @'
param($modules, $pathList, $resultFile, $scratch)
$paths = $pathList -split ','
$env:PSModulePath = $modules + [IO.Path]::PathSeparator + $env:PSModulePath
# Test folders of earlier runs from this checkout go (after unmounting any tmpfs a crashed test left there); each
# run keeps its journal and locks in a state folder of its own, so nothing left on this machine decides a test's
# outcome. Each checkout has its own scratch folder, so two checkouts never wipe each other's.
$env:ODAKVM_TEST_SCRATCH = $scratch
function Clear-Scratch {
    Get-Content /proc/mounts | ForEach-Object { ($_ -split ' ')[1] } | Where-Object { $_ -like "$scratch/*" } | ForEach-Object { & umount -l $_ }
    if (Test-Path $scratch) { Remove-Item -Recurse -Force $scratch }
}
Clear-Scratch
$env:ODAKVMBACKUP_STATE_DIR = Join-Path $scratch 'state'
Import-Module Pester -RequiredVersion 5.7.1
$c = New-PesterConfiguration
$c.Run.Path = $paths
$c.Run.PassThru = $true
$c.Output.Verbosity = 'Detailed'
$c.Output.RenderMode = 'Plaintext'
$c.TestResult.Enabled = $true
$c.TestResult.OutputPath = $resultFile
$r = Invoke-Pester -Configuration $c
if (-not $r -or $r.TotalCount -eq 0) {
    Write-Error 'Pester ran no test at all: a run without tests is a failure.'
    exit 1
}
# A skipped or not-run test is not a pass: count it as a failure.
$bad = $r.FailedCount + $r.FailedContainersCount + $r.SkippedCount + $r.NotRunCount + $r.FailedBlocksCount
# The failures again, last: a CI log is often read from its tail.
foreach ($t in @($r.Failed) + @($r.Skipped) + @($r.NotRun)) { "NOT PASSED ($($t.Result)): $($t.ExpandedPath)"; if ($t.ErrorRecord) { "    $(@($t.ErrorRecord)[0].Exception.Message)" } }
foreach ($b in @($r.FailedBlocks)) { "NOT PASSED (set-up or clean-up of a block): $($b.ExpandedPath)"; if ($b.ErrorRecord) { "    $(@($b.ErrorRecord)[0].Exception.Message)" } }
foreach ($f in @($r.FailedContainers)) { "NOT PASSED (the file could not run): $($f.Item)"; if ($f.ErrorRecord) { "    $(@($f.ErrorRecord)[0].Exception.Message)" } }
"$($r.PassedCount) passed, $($r.FailedCount + $r.FailedContainersCount + $r.FailedBlocksCount) failed, $($r.SkippedCount + $r.NotRunCount) skipped"
# The test folders hold backups of whole lab disks (3 GB a full run): kept to look at after a failure, removed after
# a run that passed, or every fresh clone's run would leave its own behind.
if ($bad -eq 0) { Clear-Scratch } else { "Test folders kept for a look: $scratch" }
exit ([Math]::Min($bad, 255))
'@
    $scriptFile = Join-Path $Out 'run-pester.ps1'
    New-Item -ItemType Directory -Force -Path $Out | Out-Null
    Set-Content -Path $scriptFile -Value $script
    # A child pwsh: a binary module cannot be unloaded, so each run must load the freshly built DLL.
    # One argument: an array would reach the child as several.
    $checkout = [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData([Text.Encoding]::UTF8.GetBytes($Root))).Substring(0, 8).ToLowerInvariant()
    & dotnet pwsh -NoProfile -File $scriptFile $PesterModules ($paths -join ',') (Join-Path $Out 'pester-results.xml') "/var/tmp/odakvm-tests-$checkout"
    if ($LASTEXITCODE -ne 0) { throw "Pester: $LASTEXITCODE test(s) failed, were skipped or did not run." }
}

# The fault table is made from figures the tests measured, never typed: each fault test adds a row once its
# assertions passed (tests/Pester/ProofHelpers.ps1), each file saves its rows to out/fault-table/<file>.json.
function Invoke-FaultTable {
    $folder = Join-Path $Out 'fault-table'
    $files = @(Get-ChildItem -Path (Join-Path $Root 'tests/Pester') -Filter '*.Tests.ps1' | Where-Object { (Get-Content -Raw $_.FullName) -match "Save-FaultRows '(\w+)'" } |
            ForEach-Object { [regex]::Match((Get-Content -Raw $_.FullName), "Save-FaultRows '(\w+)'").Groups[1].Value })
    $runs = foreach ($file in $files) {
        $json = Join-Path $folder "$file.json"
        if (-not (Test-Path $json)) { throw "No measured rows of tests/Pester/$file.Tests.ps1 ($json): run it with ./build.ps1 -Task Pester first." }
        $run = Get-Content -Raw $json | ConvertFrom-Json
        $failed = @($run.Rows | Where-Object { -not $_.Passed })
        if ($failed) { throw "tests/Pester/$file.Tests.ps1 failed in its last run ($($failed.Fault -join '; ')): run it again until it passes." }
        if (-not $run.Rows) { throw "tests/Pester/$file.Tests.ps1 measured no fault in its last run ($json)." }
        $run
    }
    $cell = { param($v) if ($null -eq $v -or "$v" -eq '') { '' } else { "$v" -replace '\|', '\|' } }
    $lines = @(
        '# Faults injected on the lab, as measured'
        ''
        'Made by `./build.ps1 -Task FaultTable` from the figures the fault tests measured in their last run; do not edit it by hand.'
        "Runs: $(($runs | ForEach-Object { "``tests/Pester/$($_.File).Tests.ps1`` $($_.FinishedUtc), commit $($_.Commit)$(if ($_.Dirty) { ' with uncommitted changes' })" }) -join '; ')."
        ''
        ('During each fault a writer in the guest appends numbered records, each with its SHA-256, to a file on each of the two disks ' +
            '(the qcow2 boot disk and the raw data disk), fsyncs both and reports each record done on the serial console, which the test reads on the host. ' +
            'The fault window opens right before the fault is injected and closes when the rollback or the repair it called for has ended ' +
            '(for a stopped guest agent: when the agent is back); "writes in the window" are the records begun and fsynced inside it.')
        ''
        ('Afterwards every record the guest reported done is read back from the VM''s own disks in four places: through the guest from each disk, ' +
            'and from each disk image on the host (frozen while read); a record missing or damaged in any of them fails the test. ' +
            'Each test also checks the guest''s `ticks.log` (a tick every 0.5 s) for holes and gaps.')
        ''
        '| Fault | Window (s) | Writes in the window | Writes reported done | Read back in each place | Error | Seconds to the error | Limit set |'
        '|---|---|---|---|---|---|---|---|'
    )
    foreach ($run in $runs) {
        foreach ($row in $run.Rows) {
            $lines += '| {0} | {1} | {2} | {3} | {4} | {5} | {6} | {7} |' -f (& $cell $row.Fault), (& $cell $row.WindowSeconds), (& $cell $row.WritesInWindow),
                (& $cell $row.WritesAcked), (& $cell $row.WritesReadBack), $(if ($row.ErrorId) { "``$($row.ErrorId)``" }), (& $cell $row.SecondsToError), (& $cell $row.Limit)
        }
    }
    $target = Join-Path $Root 'docs/fault-table.md'
    Set-Content -Path $target -Value ($lines -join "`n") -NoNewline:$false
    Write-Host "Fault table: $target ($(@($runs.Rows).Count) faults from $($files -join ', '))"
}

function Invoke-Demo {
    & (Join-Path $Root 'tools/Invoke-Demo.ps1') -ModulePath (Join-Path $ModuleOut 'OdaKvmBackup.psd1')
    if (-not $?) { throw 'The demo failed.' }
}

foreach ($step in $Task) {
    $started = Get-Date
    Write-Host "=== $step ===" -ForegroundColor Cyan
    switch ($step) {
        'Bootstrap' { Invoke-Bootstrap }
        'Build' { Invoke-Build }
        'UpdateHelp' { Invoke-UpdateHelp }
        'Package' { Invoke-Build; Invoke-Package }
        'UnitTest' { Invoke-UnitTest }
        'Format' { Invoke-FormatCheck }
        'Mutate' { Invoke-Mutate }
        'Lab' { Invoke-Lab }
        'Pester' { Invoke-Pester5 }
        'FaultTable' { Invoke-FaultTable }
        'Test' { Invoke-Bootstrap; Invoke-Build; Invoke-FormatCheck; Invoke-UnitTest; Invoke-Lab; Invoke-Pester5; Invoke-FaultTable }
        'Demo' { Invoke-Build; Invoke-Lab; Invoke-Demo }
        'Bench' { Invoke-Build; Invoke-Lab; & dotnet pwsh -NoProfile -File (Join-Path $Root 'tools/Measure-Backup.ps1') -ModulePath (Join-Path $ModuleOut 'OdaKvmBackup.psd1') -Rounds $BenchRounds; if ($LASTEXITCODE) { throw 'Bench failed' } }
        'BenchIncremental' { Invoke-Build; Invoke-Lab; & dotnet pwsh -NoProfile -File (Join-Path $Root 'tools/Measure-Incremental.ps1') -ModulePath (Join-Path $ModuleOut 'OdaKvmBackup.psd1') -Rounds $BenchRounds; if ($LASTEXITCODE) { throw 'BenchIncremental failed' } }
        'LabDown' { Import-Module (Join-Path $Root 'tests/Lab/OdaKvmLab.psm1') -Force; Remove-Lab }
        'Clean' { if (Test-Path $Out) { Remove-Item -Recurse -Force $Out } }
    }
    Write-Host ("=== {0} done in {1:0.0} s ===" -f $step, ((Get-Date) - $started).TotalSeconds) -ForegroundColor Cyan
}
