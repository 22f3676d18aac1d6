using OdaKvmBackup.HelpBuilder.Checking;
using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Tests.Support;
using OdaKvmBackup.HelpBuilder.Updating;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class MarkdownUpdaterTests
{
    private static (string Text, IReadOnlyList<string> Changes) UpdateGetWidget(string folder) =>
        MarkdownUpdater.Update(Fixture.Page(folder, "Get-Widget"), Fixture.SampleCommand("Get-Widget"));

    [Theory]
    [InlineData("Get-Widget")]
    [InlineData("Set-Widget")]
    public void A_page_that_agrees_is_left_byte_for_byte(string name)
    {
        var (text, changes) = MarkdownUpdater.Update(Fixture.Page("Agreeing", name), Fixture.SampleCommand(name));
        Assert.Empty(changes);
        Assert.Equal(Fixture.Read("Agreeing", name + ".md"), text);
    }

    [Fact]
    public void Syntax_and_yaml_are_rewritten_from_the_cmdlet_a_stale_parameter_dropped_a_new_one_stubbed()
    {
        var (text, changes) = UpdateGetWidget("Disagreeing");
        // Only what differed is changed: -Id and -Detailed were right already.
        Assert.Equal(["SYNTAX", "-Name yaml", "-Kind yaml", "-Colour removed", "-Limit added (to fill in)"], changes);
        var page = CommandPageParser.Parse("Get-Widget.md", text);
        var messages = HelpChecker.CheckPage(page, Fixture.SampleCommand("Get-Widget"), "Sample").ToList();
        // What is left needs a person: the front matter, the empty description, the stub of the new parameter.
        Assert.Equal(
        [
            "front matter 'Module Name: Other' should be 'Module Name: Sample'",
            "the description of -Detailed is missing or empty",
            "the description of -Limit is still the stub",
        ], messages);
    }

    [Fact]
    public void Every_hand_written_text_survives_the_update()
    {
        var before = Fixture.Page("Disagreeing", "Get-Widget");
        var after = CommandPageParser.Parse("Get-Widget.md", UpdateGetWidget("Disagreeing").Text);
        Assert.Equal(before.Synopsis, after.Synopsis);
        Assert.Equal(before.Description, after.Description);
        Assert.Equal(before.Examples, after.Examples, ExampleComparer.Instance);
        Assert.Equal(before.Notes, after.Notes);
        Assert.Equal(before.RelatedLinks, after.RelatedLinks);
        foreach (var parameter in after.Parameters.Where(p => p.Name != "Limit"))
            Assert.Equal(before.FindParameter(parameter.Name)!.Description, parameter.Description);
    }

    [Fact]
    public void The_default_value_written_on_the_page_is_kept()
    {
        var page = Fixture.Read("Agreeing", "Set-Widget.md");
        string edited = page.Replace("Position: 0\nDefault value: None", "Position: 3\nDefault value: red", StringComparison.Ordinal);
        Assert.NotEqual(page, edited);
        var (text, _) = MarkdownUpdater.Update(CommandPageParser.Parse("Set-Widget.md", edited), Fixture.SampleCommand("Set-Widget"));
        Assert.Contains("Position: 0\nDefault value: red", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Text_between_two_yaml_blocks_stays_when_their_number_changes()
    {
        // -Kind binds differently in its two sets (two blocks); the page has one block, a remark, then two more.
        var page = Fixture.Read("Agreeing", "Get-Widget.md");
        int kind = page.IndexOf("### -Kind", StringComparison.Ordinal);
        int limit = page.IndexOf("### -Limit", StringComparison.Ordinal);
        string section = "### -Kind\nOnly widgets of this kind.\n\n```yaml\nType: String\n```\n\nA remark between blocks.\n\n```yaml\nType: Int32\n```\n\n```yaml\nType: Int64\n```\n\n";
        var edited = CommandPageParser.Parse("Get-Widget.md", page[..kind] + section + page[limit..]);
        var (text, _) = MarkdownUpdater.Update(edited, Fixture.SampleCommand("Get-Widget"));
        var updated = CommandPageParser.Parse("Get-Widget.md", text);
        var kindSection = updated.FindParameter("Kind")!;
        Assert.Equal(["Only widgets of this kind.", "A remark between blocks."], kindSection.Description);
        Assert.Equal(["ByName", "ById"], kindSection.Yaml.Select(y => y[ParameterYaml.ParameterSets]));
        Assert.Empty(HelpChecker.CheckPage(updated, Fixture.SampleCommand("Get-Widget"), "Sample"));
    }

    [Fact]
    public void A_second_update_changes_nothing()
    {
        var (once, _) = UpdateGetWidget("Disagreeing");
        var (twice, changes) = MarkdownUpdater.Update(CommandPageParser.Parse("Get-Widget.md", once), Fixture.SampleCommand("Get-Widget"));
        Assert.Empty(changes);
        Assert.Equal(once, twice);
    }

    [Fact]
    public void A_page_without_SYNTAX_or_PARAMETERS_gets_them()
    {
        var command = Fixture.SampleCommand("Set-Widget");
        var page = CommandPageParser.Parse("Set-Widget.md", "# Set-Widget\n\n## SYNOPSIS\nPaints.\n\n## DESCRIPTION\nPaints a widget.\n\n## NOTES\nNone.\n");
        var (text, _) = MarkdownUpdater.Update(page, command);
        var updated = CommandPageParser.Parse("Set-Widget.md", text);
        Assert.Equal(CmdletHelpLine(command), Assert.Single(updated.Syntax).Text);
        Assert.Equal(command.Parameters.Select(p => p.Name), updated.Parameters.Select(p => p.Name));
        Assert.Equal("Sample.Widget", Assert.Single(updated.Outputs).TypeName);
        Assert.Equal(["None."], updated.Notes);
        Assert.True(text.IndexOf("## SYNTAX", StringComparison.Ordinal) < text.IndexOf("## DESCRIPTION", StringComparison.Ordinal));
    }

    [Fact]
    public void A_new_page_agrees_with_its_cmdlet_but_for_the_text_to_write()
    {
        var command = Fixture.SampleCommand("Get-Widget");
        var page = CommandPageParser.Parse("Get-Widget.md", MarkdownUpdater.NewPage(command, "Sample"));
        Assert.Empty(page.Problems);
        Assert.All(HelpChecker.CheckPage(page, command, "Sample"), m => Assert.Contains("stub", m, StringComparison.Ordinal));
    }

    private static string CmdletHelpLine(Facts.CommandFacts command) => Facts.CmdletHelp.SyntaxLine(command, command.ParameterSets[0]);

    private sealed class ExampleComparer : IEqualityComparer<ExampleSection>
    {
        public static readonly ExampleComparer Instance = new();

        public bool Equals(ExampleSection? x, ExampleSection? y) =>
            x is not null && y is not null && x.Title == y.Title && x.Code.SequenceEqual(y.Code) && x.Remarks.SequenceEqual(y.Remarks);

        public int GetHashCode(ExampleSection obj) => obj.Title.GetHashCode(StringComparison.Ordinal);
    }
}
