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
      Lab        bring up the real libvirt + QEMU lab (installs packages; root)
      Pester     Pester tests of the built module against the lab, in a child pwsh
      Test       Bootstrap, Build, UnitTest, Lab, Pester: every test; fails if any test fails or is skipped
      Demo       Build, Lab, then a real hot backup of linux_vm with the README's one-liner
      Bench      the copy engine, SSH copies and the one-liner against cp, scp, tar and the steps by hand, side by side
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
$known = 'Bootstrap', 'Build', 'UpdateHelp', 'Package', 'UnitTest', 'Lab', 'Pester', 'Test', 'Demo', 'Bench', 'LabDown', 'Clean'
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
        Invoke-Native dotnet @('test', (Join-Path $Root "tests/Unit/$project/$project.csproj"), '--nologo', '-v', 'quiet',
            '--logger', 'console;verbosity=normal', '--logger', "trx;LogFileName=$project.trx", '--results-directory', $results)
        # dotnet test exits 0 when tests are skipped or none are found: here both are failures, as in Pester.
        $trx = [xml](Get-Content -Raw (Join-Path $results "$project.trx"))
        $counters = $trx.TestRun.ResultSummary.Counters
        $ran = [int]$counters.total
        $notPassed = $ran - [int]$counters.passed
        Write-Host "$project`: $($counters.passed) passed, $($counters.failed) failed, $($counters.notExecuted) skipped or not run, of $ran"
        if ($ran -eq 0) { throw "$project ran no test at all: a run without tests is a failure." }
        if ($notPassed -ne 0) { throw "$project`: $notPassed test(s) failed, were skipped or did not run." }
    }
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
Get-Content /proc/mounts | ForEach-Object { ($_ -split ' ')[1] } | Where-Object { $_ -like "$scratch/*" } | ForEach-Object { & umount -l $_ }
if (Test-Path $scratch) { Remove-Item -Recurse -Force $scratch }
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
"$($r.PassedCount) passed, $($r.FailedCount + $r.FailedContainersCount + $r.FailedBlocksCount) failed, $($r.SkippedCount + $r.NotRunCount) skipped"
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
        'Lab' { Invoke-Lab }
        'Pester' { Invoke-Pester5 }
        'Test' { Invoke-Bootstrap; Invoke-Build; Invoke-UnitTest; Invoke-Lab; Invoke-Pester5 }
        'Demo' { Invoke-Build; Invoke-Lab; Invoke-Demo }
        'Bench' { Invoke-Build; Invoke-Lab; & dotnet pwsh -NoProfile -File (Join-Path $Root 'tools/Measure-Backup.ps1') -ModulePath (Join-Path $ModuleOut 'OdaKvmBackup.psd1') -Rounds $BenchRounds; if ($LASTEXITCODE) { throw 'Bench failed' } }
        'LabDown' { Import-Module (Join-Path $Root 'tests/Lab/OdaKvmLab.psm1') -Force; Remove-Lab }
        'Clean' { if (Test-Path $Out) { Remove-Item -Recurse -Force $Out } }
    }
    Write-Host ("=== {0} done in {1:0.0} s ===" -f $step, ((Get-Date) - $started).TotalSeconds) -ForegroundColor Cyan
}
