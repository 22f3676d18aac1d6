using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

public class QemuImgClientTests
{
    [Fact]
    public void Real_qcow2_info_without_backing_file()
    {
        var info = QemuImgClient.ParseInfo(Fixture.Read("linux_boot.qemu-img-info.json"));

        Assert.Equal("qcow2", info.Format);
        Assert.Equal(67108864, info.VirtualSize);
        Assert.Equal(1056768, info.ActualSize);
        Assert.Null(info.BackingFile);
        Assert.Null(info.BackingFormat);
    }

    [Fact]
    public void Real_raw_info()
    {
        var info = QemuImgClient.ParseInfo(Fixture.Read("disco_secundario.qemu-img-info.json"));

        Assert.Equal("raw", info.Format);
        Assert.Equal(67108864, info.VirtualSize);
        Assert.Equal(67112960, info.ActualSize);
        Assert.Null(info.BackingFile);
    }

    [Fact]
    public void Real_overlay_info_names_its_backing_file_and_format()
    {
        var info = QemuImgClient.ParseInfo(Fixture.Read("overlay-with-raw-backing.qemu-img-info.json"));

        Assert.Equal("qcow2", info.Format);
        Assert.Equal("/tmp/qfx/base disk.raw", info.BackingFile);
        Assert.Equal("raw", info.BackingFormat);
    }

    [Fact]
    public void Full_backing_filename_wins_over_a_relative_backing_filename()
    {
        var info = QemuImgClient.ParseInfo("""{"format":"qcow2","virtual-size":1,"actual-size":1,"backing-filename":"base.raw","full-backing-filename":"/x/base.raw","backing-filename-format":"raw"}""");

        Assert.Equal("/x/base.raw", info.BackingFile);
    }

    [Theory]
    [InlineData("")]
    [InlineData("qemu-img: Could not open '/nonexistent': Could not open '/nonexistent': No such file or directory")]
    [InlineData("{\"format\": \"qcow2\",")]
    public void Output_that_is_not_json_is_a_parser_error(string output)
    {
        var ex = Assert.Throws<BackupException>(() => QemuImgClient.ParseInfo(output));

        Assert.Equal(ErrorIds.UnparsableOutput, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.ParserError, ex.Category);
    }

    [Fact]
    public async Task Info_reads_the_header_only_and_shares_the_image_with_a_running_qemu()
    {
        var runner = new FakeRunner(_ => Results.Ok(Fixture.Read("linux_boot.qemu-img-info.json")));

        var info = await new QemuImgClient(runner).InfoAsync("/x/linux boot", CancellationToken.None);

        Assert.Equal("qcow2", info.Format);
        var call = Assert.Single(runner.Calls);
        Assert.Equal("qemu-img", call.Program);
        Assert.Equal(["info", "--output=json", "-U", "/x/linux boot"], call.Args);
    }

    [Fact]
    public async Task Failed_qemu_img_names_the_image_and_quotes_its_stderr()
    {
        var runner = new FakeRunner(_ => new ProcessResult(1, "", "qemu-img: Could not open '/nonexistent': Could not open '/nonexistent': No such file or directory\n", TimeSpan.Zero));

        var ex = await Assert.ThrowsAsync<BackupException>(() => new QemuImgClient(runner).InfoAsync("/nonexistent", CancellationToken.None));

        Assert.Equal(ErrorIds.QemuImgFailed, ex.ErrorId);
        Assert.Equal("/nonexistent", ex.Target);
        Assert.Contains("No such file or directory", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Commit_commits_the_overlay_given()
    {
        var runner = new FakeRunner(_ => Results.Ok("Image committed.\n"));

        await new QemuImgClient(runner).CommitAsync("/x/a.FILE_STAGE_BACKUP.TEMP", CancellationToken.None);

        Assert.Equal(["commit", "/x/a.FILE_STAGE_BACKUP.TEMP"], Assert.Single(runner.Calls).Args);
    }
}
